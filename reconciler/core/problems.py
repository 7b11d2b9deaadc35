"""Problems found in the files, reported as `FILE:LINE:COL: CODE message`.

The codes are stable: scripts and editors may rely on them. docs/errors.md explains each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

YAML_SYNTAX = "E100"
DUPLICATE_KEY = "E101"
NOT_A_MAPPING = "E102"
BAD_HEADER = "E103"
UNKNOWN_KIND = "E104"
MISSING_FIELD = "E110"
WRONG_TYPE = "E111"
NOT_ALLOWED = "E112"
BAD_FORMAT = "E113"
UNKNOWN_FIELD = "E114"
INVALID_VALUE = "E115"
DUPLICATE_RESOURCE = "E120"
INLINE_AND_STANDALONE = "E121"
UNKNOWN_PROJECT = "E122"
UNKNOWN_USER = "E130"
DATABASE_REFUSED = "E140"
UNREADABLE_FILE = "E150"
UNKNOWN_NEED = "E160"
NEEDS_CYCLE = "E161"
BAD_SCHEDULE = "E162"
TRIGGER_MISMATCH = "E163"
UNACKNOWLEDGED_ADVISORY = "E170"


class Source(NamedTuple):
    """Where a value is written: the file relative to the state directory, 1-based line/col.
    (A tuple: the cache holds hundreds of thousands and unpickles them fast.)"""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class Problem:
    source: Source
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.code} {self.message}"
