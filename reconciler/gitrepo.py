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
from reconciler.ignore import IGNORE_FILE, Ignored

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
        ignored = self._ignore_rules(tree)
        found = []
        tree_any: Any = tree  # gitpython's traverse() overloads do not type a plain walk

        def prune(item: Any, _depth: int) -> bool:
            is_folder = item.type == "tree" and bool(item.path)  # the root comes as ""
            return is_folder and ignored.folder(self._relative(item.path))

        items: Iterable[Any] = tree_any.traverse(prune=prune)
        for item in items:
            if item.type == "blob" and not ignored.file(self._relative(item.path)):
                found.append((self._relative(item.path), item.hexsha))
        return sorted(found)

    def _relative(self, path: str) -> str:
        return posixpath.relpath(path, self.prefix or ".")

    def _ignore_rules(self, tree: Any) -> Ignored:
        """The state directory's .reconcileignore at this ref, as the working tree's is."""
        try:
            blob = tree / IGNORE_FILE
        except KeyError:
            return Ignored()
        return Ignored.parse(self.read(blob.hexsha).decode("utf-8", errors="replace"))

    def branch_name(self, ref: str) -> str | None:
        """The branch a ref names: itself when it is a branch, else the checked-out one."""
        if ref in {h.name for h in self.repo.heads}:
            return ref
        if ref == "HEAD" or self.commit == self.repo.head.commit:
            return _branch(self.repo)
        return None

    def read(self, sha: str) -> bytes:
        return bytes(self.repo.odb.stream(bytes.fromhex(sha)).read())

    def close(self) -> None:
        self.repo.close()
