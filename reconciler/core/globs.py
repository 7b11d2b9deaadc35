"""`paths` globs, GitHub Actions style: `*` stays within a folder, `**` crosses folders, a
leading `!` excludes. A set of files matches when one file matches a pattern and no `!`
pattern. wcmatch implements the glob grammar (globstar, negation, braces, classes)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from wcmatch import glob

_FLAGS = glob.GLOBSTAR | glob.NEGATE | glob.DOTGLOB | glob.BRACE


@lru_cache(maxsize=4096)
def _matcher(patterns: tuple[str, ...]) -> glob.WcMatcher[str]:
    return glob.compile(patterns, flags=_FLAGS)


def any_match(patterns: tuple[str, ...], files: Iterable[str]) -> bool:
    matcher = _matcher(patterns)
    return any(matcher.match(path) for path in files)
