"""How a state file is read from disk: only a regular file inside the state directory, and
never more than the limits allow (core/limits.py).

A file in a pull request is hostile: `x.yaml` may be a symlink to /etc/passwd or /dev/zero, a
FIFO that blocks every reader, a device or a socket. Such a file is refused with a problem on
its own path, before it is opened; a symlink is followed only when its target is a regular
file inside the state directory. The bytes read are capped per file and per run.
"""

from __future__ import annotations

import os
import stat as st
from pathlib import Path

from reconciler.core import limits
from reconciler.core import problems as codes
from reconciler.core.problems import Problem, Source


class Refused(Exception):
    """The file is not read: its problem's code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def problem(self, relative: str) -> Problem:
        return Problem(Source(relative), self.code, self.message)


OUTSIDE = (
    "a symbolic link to a file outside the state directory; reconcile reads only files "
    "inside it (copy the file in, or remove the link)"
)
FOLDER_LINK = (
    "a symbolic link to a folder; reconcile does not follow links to folders, so the files "
    "behind it would be missing from the plan (move them in, or remove the link)"
)
_KINDS = {
    st.S_IFIFO: "a FIFO (named pipe)",
    st.S_IFCHR: "a character device",
    st.S_IFBLK: "a block device",
    st.S_IFSOCK: "a socket",
    st.S_IFDIR: "a directory",
}


class StateReader:
    """Reads the files of one state directory for one run, counting the bytes it reads."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.total = 0

    def stat(self, path: str | Path) -> os.stat_result:
        """The file's stat, if it is one reconcile reads; else Refused (nothing is opened)."""
        link = os.lstat(path)
        if st.S_ISLNK(link.st_mode):
            target = os.path.realpath(path)
            if os.path.commonpath([self.root, target]) != self.root:
                raise Refused(codes.NOT_A_REGULAR_FILE, OUTSIDE)
        found = os.stat(path) if st.S_ISLNK(link.st_mode) else link
        if st.S_ISLNK(link.st_mode) and st.S_ISDIR(found.st_mode):
            raise Refused(codes.NOT_A_REGULAR_FILE, FOLDER_LINK)
        _require_regular(found.st_mode)
        self.total += found.st_size
        if found.st_size > limits.MAX_FILE_BYTES:
            raise Refused(codes.LIMIT_EXCEEDED, limits.too_large(found.st_size))
        if self.total > limits.MAX_RUN_BYTES:
            raise Refused(codes.LIMIT_EXCEEDED, limits.run_too_large(self.total))
        return found

    def read(self, path: str | Path) -> bytes:
        """At most the per-file limit of bytes, from a file that is still a regular file once
        opened (never blocking on a FIFO swapped in after `stat`)."""
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        try:
            _require_regular(os.fstat(fd).st_mode)
            chunks, size = [], 0
            while chunk := os.read(fd, min(1 << 20, limits.MAX_FILE_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > limits.MAX_FILE_BYTES:
                    raise Refused(codes.LIMIT_EXCEEDED, limits.too_large(size))
            return b"".join(chunks)
        finally:
            os.close(fd)


def _require_regular(mode: int) -> None:
    if not st.S_ISREG(mode):
        kind = _KINDS.get(st.S_IFMT(mode), "not a regular file")
        raise Refused(
            codes.NOT_A_REGULAR_FILE,
            f"{kind}, not a regular file; reconcile reads only regular files",
        )
