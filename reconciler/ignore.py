"""Which files of a state directory are not state files: hidden ones (a name starting with
`.`, files and folders alike: `.pre-commit-config.yaml`, `.github/`), and those matched by the
state directory's `.reconcileignore`, in gitignore syntax (matched by `pathspec`, as git
does), so a repository's root can be its state directory: `docker-compose.yml`, `addons/`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

import pathspec

IGNORE_FILE = ".reconcileignore"
SUFFIXES = (".yaml", ".yml")


class Ignored:
    """The rules of one state directory. Paths are relative to it, with `/` separators."""

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self._spec = pathspec.GitIgnoreSpec.from_lines(list(lines))
        self._any = bool(self._spec.patterns)  # most state directories have no rules

    @classmethod
    def parse(cls, text: str | None) -> Ignored:
        return cls(text.splitlines() if text else ())

    def folder(self, relative: str) -> bool:
        """Whether to skip this folder and everything in it."""
        return _hidden(relative) or (self._any and self._spec.match_file(relative + "/"))

    def file(self, relative: str) -> bool:
        """Whether this path is not a state file (wrong suffix, hidden or ignored)."""
        return (
            not relative.endswith(SUFFIXES)
            or _hidden(relative)
            or (self._any and self._spec.match_file(relative))
        )


def _hidden(relative: str) -> bool:
    name = posixpath.basename(relative)
    return name.startswith(".") and name not in (".", "..")
