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
UNSUPPORTED_YAML = "E105"
LIMIT_EXCEEDED = "E106"
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
NOT_A_REGULAR_FILE = "E151"
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
        return f"{one_line(self.file)}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class Problem:
    source: Source
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.code} {one_line(self.message)}"

    def as_dict(self) -> dict[str, object]:
        file, line, col = self.source
        return {"file": file, "line": line, "col": col, "code": self.code, "message": self.message}


def one_line(text: str) -> str:
    """`text` as one line a terminal shows as written: every character that is not printable
    (line breaks, NUL and other controls, U+2028, bidi overrides) escaped as Python would."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
