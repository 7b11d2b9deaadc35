"""The git repository holding the state directory: commit, branch, and uncommitted changes."""

from __future__ import annotations

import os
from pathlib import Path

import git

from reconciler.core.plan import GitContext

# Where CI systems say which branch they build (a CI checkout is often a detached HEAD).
CI_REF_VARIABLES = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME")


def context(state_dir: Path, ref_override: str | None) -> GitContext:
    try:
        repo = git.Repo(state_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return GitContext(None, ref_override, clean=False, reason="not a git repository")
    with repo:
        try:
            commit = repo.head.commit.hexsha
        except ValueError:
            return GitContext(None, ref_override, clean=False, reason="no commit yet")
        ref = ref_override or _branch(repo)
        relative = os.path.relpath(state_dir.resolve(), repo.working_tree_dir or ".")
        dirty = repo.is_dirty(untracked_files=True, path=relative)
    reason = "uncommitted changes in the state directory" if dirty else None
    return GitContext(commit, ref, clean=not dirty, reason=reason)


def _branch(repo: git.Repo) -> str | None:
    if not repo.head.is_detached:
        return repo.active_branch.name
    for variable in CI_REF_VARIABLES:
        if value := os.environ.get(variable):
            return value
    return None
