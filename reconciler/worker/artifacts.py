"""Artifacts: files of the run's workspace, matched by the workflow's patterns, copied into the
worker's store under `<project>/<run number>/<path in the workspace>`.

A step's workspace is hostile: a pattern must be relative and stay inside the workspace (no
absolute path, no `..`), and every match is resolved (symlinks included) and must be a regular
file inside the workspace. Files are opened without following a final symlink and without
blocking (a FIFO never hangs the worker), copied to a temporary file in the store and renamed
into place, so nothing outside the store is ever written or truncated.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import mimetypes
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reconciler.errors import ReconcilerError

COPY_CHUNK = 1 << 20


class ArtifactError(ReconcilerError):
    """A pattern or a match the worker refuses; the run fails with this reason."""


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    path: Path
    content_type: str
    size: int
    checksum: str


def check_pattern(pattern: object) -> str:
    """The pattern, if it is one the worker accepts; ArtifactError saying why otherwise."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ArtifactError(f"artifact pattern {pattern!r} is not a non-empty string")
    if "\x00" in pattern:
        raise ArtifactError(f"artifact pattern {pattern!r} contains a NUL byte")
    path = PurePosixPath(pattern)
    if path.is_absolute() or pattern.startswith("~"):
        raise ArtifactError(
            f"artifact pattern {pattern!r} is absolute; patterns are relative to the "
            "run's workspace"
        )
    if ".." in path.parts:
        raise ArtifactError(
            f"artifact pattern {pattern!r} leaves the run's workspace (`..`); patterns "
            "are relative to the run's workspace"
        )
    return pattern


def matches(workspace: Path, pattern: str) -> list[Path]:
    """The files of the workspace the pattern matches, as paths relative to it."""
    root = workspace.resolve()
    found: list[Path] = []
    for match in sorted(glob.glob(pattern, root_dir=root, recursive=True)):
        relative = Path(match)
        real = (root / relative).resolve()
        if not real.is_relative_to(root):
            raise ArtifactError(
                f"artifact {match!r} resolves outside the run's workspace (a symlink?)"
            )
        if real.is_file():
            found.append(real.relative_to(root))
    return found


def store(workspace: Path, relative: Path, store_dir: Path, key: str) -> StoredArtifact:
    """Copy one workspace file into the store under `key`; its checksum on the way."""
    root = store_dir.resolve()
    target = (root / key).resolve()
    if not target.is_relative_to(root) or target == root:
        raise ArtifactError(f"artifact key {key!r} leaves the artifact store")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    source = _open_regular(workspace.resolve() / relative)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(source, "rb") as reader, os.fdopen(handle, "wb") as sink:
            while chunk := reader.read(COPY_CHUNK):
                digest.update(chunk)
                sink.write(chunk)
                size += len(chunk)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    content_type = mimetypes.guess_type(relative.name)[0] or "application/octet-stream"
    return StoredArtifact(key, target, content_type, size, f"sha256:{digest.hexdigest()}")


def _open_regular(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ArtifactError(f"artifact {path.name!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArtifactError(f"artifact {path.name!r} is not a regular file")
    return fd
