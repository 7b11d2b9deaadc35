"""A progress line for long work (parsing thousands of files), on a terminal only.

Written to stderr, only when stderr is a terminal, not in CI (`CI` set) and not with
TERM=dumb; it appears after a second, updates at most ten times a second, and is erased at
the end, so pipes, files and CI logs never see it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

DELAY_S = 1.0
EVERY_S = 0.1


def wanted(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("CI") and os.environ.get("TERM", "") != "dumb"


def for_terminal(stream: TextIO | None = None) -> Callable[[int, int], None] | None:
    """A `progress(done, total)` callback, or None where there must be no progress line."""
    stream = stream or sys.stderr
    return Progress(stream, "parsing files") if wanted(stream) else None


class Progress:
    def __init__(self, stream: TextIO, what: str) -> None:
        self.stream = stream
        self.what = what
        self.started = time.monotonic()
        self.shown_at = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total:
            if self.shown:
                self.stream.write("\r\033[K")
                self.stream.flush()
            return
        if now - self.started < DELAY_S or now - self.shown_at < EVERY_S:
            return
        self.stream.write(f"\r{self.what}: {done}/{total} ({100 * done // total}%)")
        self.stream.flush()
        self.shown_at, self.shown = now, True
