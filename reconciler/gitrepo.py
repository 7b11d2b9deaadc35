"""The git repository holding the state directory: commit, branch, and uncommitted changes."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import git

from reconciler.core import limits
from reconciler.core import problems as codes
from reconciler.core.plan import GitContext
from reconciler.core.repository import refusal, without_credentials
from reconciler.errors import ReconcilerError
from reconciler.ignore import IGNORE_FILE, Ignored
from reconciler.reading import FOLDER_LINK, Refused
from reconciler.reading import OUTSIDE as _OUTSIDE

# Where CI systems say which branch they build (a CI checkout is often a detached HEAD).
_SYMLINK = 0o120000  # a git tree entry's mode for a symbolic link (its blob is the target)
_MAX_LINKS = 8
CI_REF_VARIABLES = ("GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "BRANCH_NAME")
# Says where workers fetch the state repository from, when the CI or `origin` is not it.
REPOSITORY_VARIABLE = "RECONCILE_REPOSITORY_URL"


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
        repository = location(repo)
    reason = "uncommitted changes in the state directory" if dirty else None
    return GitContext(commit, ref, clean=not dirty, reason=reason, repository=repository)


def location(repo: git.Repo) -> str:
    """Where workers fetch this repository's commits: RECONCILE_REPOSITORY_URL, else what the
    CI says it builds, else the `origin` remote, else the repository's own folder. Never with
    credentials (a CI's origin often holds a token; workers bring their own)."""
    if explicit := os.environ.get(REPOSITORY_VARIABLE):
        if reason := refusal(explicit):
            raise ReconcilerError(f"{REPOSITORY_VARIABLE} is refused: {reason}")
        return without_credentials(explicit)
    top = Path(repo.working_tree_dir or repo.git_dir).resolve()
    for candidate in (_ci_repository(), _origin(repo, top)):
        if candidate and refusal(candidate) is None:
            return without_credentials(candidate)
    return str(top)


def _ci_repository() -> str | None:
    env = os.environ
    if env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
        return f"{env['GITHUB_SERVER_URL'].rstrip('/')}/{env['GITHUB_REPOSITORY']}.git"
    if project_url := env.get("CI_PROJECT_URL"):  # GitLab (CI_REPOSITORY_URL holds a token)
        return f"{project_url.rstrip('/')}.git"
    return None


def _origin(repo: git.Repo, top: Path) -> str | None:
    """The `origin` remote's URL; a relative path made absolute."""
    try:
        url = str(repo.remotes.origin.url)
    except (AttributeError, IndexError, ValueError, git.GitCommandError):
        return None
    if refusal(url) is None or "://" in url or "::" in url or url.startswith("-"):
        return url  # used as it is if git may be handed it; else passed over
    return str((top / url).resolve())  # a path relative to the repository, e.g. ../code.git


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
        self.refused: list[tuple[str, Refused]] = []  # files blobs() will not give, and why
        self.total = 0  # bytes read, against the limit of one run

    def blobs(self) -> list[tuple[str, str]]:
        """(path relative to the state directory, blob sha) of every YAML file, sorted."""
        try:
            tree = self.commit.tree / self.prefix if self.prefix else self.commit.tree
        except KeyError:
            return []  # the state directory does not exist at that ref
        ignored = self._ignore_rules(tree)
        skipped: dict[str, bool] = {}  # folder -> inside an ignored (or hidden) folder
        found = []
        for mode, kind, sha, relative in self._listing(tree.hexsha):
            if kind != "blob" or _in_ignored_folder(relative, ignored, skipped):
                continue  # a submodule, or a file below a folder that is not walked
            try:
                if not ignored.file(relative):
                    found.append((relative, sha if mode != _SYMLINK else self._link(relative)))
                elif mode == _SYMLINK and not ignored.folder(relative):
                    self._refuse_folder_link(self._item(relative))
            except Refused as refused:
                self.refused.append((relative, refused))
        return sorted(found)

    def _listing(self, tree: str) -> Iterable[tuple[int, str, str, str]]:
        """(mode, type, sha, path below the tree) of every entry under it: one `git ls-tree`
        (walking the tree object by object in Python took 0.1-0.2 s for 10,000 files)."""
        listing = self.repo.git.ls_tree(
            "-r", "-z", "--full-tree", tree, strip_newline_in_stdout=False
        )
        for entry in listing.split("\0"):
            if entry:
                meta, _, path = entry.partition("\t")
                mode, kind, sha = meta.split()
                yield int(mode, 8), kind, sha, path

    def _item(self, relative: str) -> Any:
        return self.commit.tree / (f"{self.prefix}/{relative}" if self.prefix else relative)

    def _link(self, relative: str) -> str:
        return self._regular(self._item(relative))

    def _relative(self, path: str) -> str:
        """The path below the state directory (a prefix cut: relpath per blob is slow)."""
        return path[len(self.prefix) + 1 :] if self.prefix else path

    def _ignore_rules(self, tree: Any) -> Ignored:
        """The state directory's .reconcileignore at this ref, as the working tree's is (a
        regular file's blob, bounded; a link or a folder there is an error)."""
        try:
            blob = tree / IGNORE_FILE
        except KeyError:
            return Ignored()
        if blob.type != "blob" or blob.mode == _SYMLINK:
            raise ReconcilerError(f"{IGNORE_FILE} at {self.commit.hexsha[:12]}: not a regular file")
        try:
            text = self.read(blob.hexsha).decode("utf-8", errors="replace")
        except Refused as refused:
            raise ReconcilerError(f"{IGNORE_FILE}: {refused.message}") from None
        return Ignored.parse(text)

    def branch_name(self, ref: str) -> str | None:
        """The branch a ref names: itself when it is a branch, else the checked-out one."""
        if ref in {h.name for h in self.repo.heads}:
            return ref
        if ref == "HEAD" or self.commit == self.repo.head.commit:
            return _branch(self.repo)
        return None

    def _refuse_folder_link(self, link: Any) -> None:
        """A link to a folder is not followed, as on disk: a problem on the link, never its
        files silently missing. (A link to outside may be to a file: left alone, unread.)"""
        try:
            target = self._link_target(link)
        except Refused:
            return
        if target.type == "tree":
            raise Refused(codes.NOT_A_REGULAR_FILE, FOLDER_LINK)

    def _regular(self, item: Any) -> str:
        """The sha of the regular file at `item`: itself, or what its symlink points to when
        that is a regular file inside the state directory (as on disk, see reading.py)."""
        for _ in range(_MAX_LINKS):
            if item.type != "blob":  # a folder or a submodule
                raise Refused(codes.NOT_A_REGULAR_FILE, FOLDER_LINK)
            if item.mode != _SYMLINK:
                return str(item.hexsha)
            item = self._link_target(item)
        raise Refused(codes.NOT_A_REGULAR_FILE, "a symbolic link in a loop")

    def _link_target(self, link: Any) -> Any:
        target = self.read(link.hexsha, limit=4096).decode("utf-8", "replace")
        path = posixpath.normpath(posixpath.join(posixpath.dirname(link.path), target))
        inside = not self.prefix or path.startswith(self.prefix + "/")
        if posixpath.isabs(target) or path == ".." or path.startswith("../") or not inside:
            raise Refused(codes.NOT_A_REGULAR_FILE, _OUTSIDE)
        try:
            item = self.commit.tree / path
        except KeyError:
            raise Refused(codes.UNREADABLE_FILE, "a symbolic link to nothing") from None
        return item

    def read(self, sha: str, limit: int = limits.MAX_FILE_BYTES) -> bytes:
        """The blob's bytes; Refused (without reading it) when it is larger than `limit`."""
        binsha = bytes.fromhex(sha)
        size = self.repo.odb.info(binsha).size
        if size > limit:
            raise Refused(codes.LIMIT_EXCEEDED, limits.too_large(size))
        self.total += size
        if self.total > limits.MAX_RUN_BYTES:
            raise Refused(codes.LIMIT_EXCEEDED, limits.run_too_large(self.total))
        return bytes(self.repo.odb.stream(binsha).read())

    def close(self) -> None:
        self.repo.close()


def _in_ignored_folder(relative: str, ignored: Ignored, skipped: dict[str, bool]) -> bool:
    """Whether a folder above this path is skipped (hidden or ignored), as a walk that does not
    descend into such folders would find."""
    folder = posixpath.dirname(relative)
    if not folder:
        return False
    if folder not in skipped:
        skipped[folder] = _in_ignored_folder(folder, ignored, skipped) or ignored.folder(folder)
    return skipped[folder]


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
