"""What a member wrote or a step printed, made safe to show: HTML is escaped by the templates
(autoescape) and by the browser's text nodes; here terminal escapes and control characters go."""

from __future__ import annotations

import re

# CSI (colours, cursor moves), OSC (titles, hyperlinks) and other ESC sequences.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
# C0/C1 controls except tab, and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
REPLACEMENT = "\ufffd"
LINE_LIMIT = 10_000


def clean(text: str | None, limit: int = LINE_LIMIT) -> str:
    """One line of output as plain text: no escape sequences, no controls, at most `limit`
    characters (the rest is cut with a note)."""
    if not text:
        return ""
    text = _CONTROL.sub(REPLACEMENT, _ANSI.sub("", text.replace("\r\n", "\n")))
    if len(text) > limit:
        return text[:limit] + f" … ({len(text) - limit} more characters)"
    return text


def like_pattern(search: str) -> str:
    """A case-insensitive substring pattern for ILIKE, with the wildcards of the search escaped."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
