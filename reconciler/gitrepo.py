"""The git repository holding the state directory: commit, branch, and uncommitted changes."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import git

from reconciler.core.plan import GitContext
from reconciler.errors import ReconcilerError

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


class GitTree:
    """The state directory's files at a git ref, read from the object database (no checkout)."""

    def __init__(self, state_dir: Path, ref: str) -> None:
        try:
            self.repo = git.Repo(state_dir, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ReconcilerError(f"{state_dir} is not in a git repository") from None
        try:
            self.commit = self.repo.commit(ref)
        except (git.BadName, ValueError):
            raise ReconcilerError(f"unknown git ref {ref!r}") from None
        top = Path(self.repo.working_tree_dir or ".")
        prefix = os.path.relpath(state_dir.resolve(), top.resolve())
        self.prefix = "" if prefix == "." else prefix.replace(os.sep, "/")
        self.root = top

    def blobs(self) -> list[tuple[str, str]]:
        """(path relative to the state directory, blob sha) of every YAML file, sorted."""
        try:
            tree = self.commit.tree / self.prefix if self.prefix else self.commit.tree
        except KeyError:
            return []  # the state directory does not exist at that ref
        found = []
        tree_any: Any = tree  # gitpython's traverse() overloads do not type a plain walk
        items: Iterable[Any] = tree_any.traverse(prune=_hidden_folder)
        for item in items:
            if item.type == "blob" and item.name.endswith((".yaml", ".yml")):
                found.append((posixpath.relpath(item.path, self.prefix or "."), item.hexsha))
        return sorted(found)

    def read(self, sha: str) -> bytes:
        return bytes(self.repo.odb.stream(bytes.fromhex(sha)).read())

    def close(self) -> None:
        self.repo.close()


def _hidden_folder(item: object, _depth: int) -> bool:
    return getattr(item, "type", "") == "tree" and str(getattr(item, "name", "")).startswith(".")


def changed_files(state_dir: Path, since: str | None, commit: str | None) -> frozenset[str] | None:
    """The repository paths that differ between two commits (renames count both names), or
    None when that cannot be told (no earlier commit, or one git does not know)."""
    if since is None or commit is None:
        return None
    try:
        repo = git.Repo(state_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    with repo:
        try:
            diffs = repo.commit(since).diff(repo.commit(commit))
        except (git.BadName, ValueError, git.GitCommandError):
            return None
        return frozenset(p for d in diffs for p in (d.a_path, d.b_path) if p)
