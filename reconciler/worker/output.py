"""A step's output as stored log lines: every byte kept, readable, secrets masked.

Encoding (docs/reference.md, "Run logs"): a line that is valid UTF-8 without NUL is stored as
it is. Any other line is stored *escaped* and its metadata says `"encoding": "escaped"`: each
backslash is doubled, each byte that is not valid UTF-8 and each NUL becomes `\\xNN`. So the
database (whose text cannot hold NUL) always accepts the line, a reader sees the bytes, and
`decode_line` gives back exactly what the step printed.

Lines longer than LINE_MAX_BYTES are stored in pieces (metadata `"continued": true` on every
piece but the last). Secret values are replaced by `***` before a line is cut or stored, so a
secret is masked whether the step printed it in one write or across reads, and a piece boundary
never splits an unmasked secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

LINE_MAX_BYTES = 64 * 1024
MASK = b"***"
_ESCAPE = re.compile(r"\\(\\|x([0-9a-f]{2}))")


def encode_line(raw: bytes) -> tuple[str, bool]:
    """The text to store for `raw`, and whether it had to be escaped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if "\x00" not in text:
            return text, False
    escaped = raw.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")
    return escaped.replace("\x00", "\\x00"), True


def decode_line(text: str, escaped: bool) -> bytes:
    """The bytes a step printed, from a stored line (the inverse of encode_line)."""
    if not escaped:
        return text.encode("utf-8")
    out = bytearray()
    position = 0
    for match in _ESCAPE.finditer(text):
        out += text[position : match.start()].encode("utf-8")
        out += b"\\" if match.group(2) is None else bytes([int(match.group(2), 16)])
        position = match.end()
    out += text[position:].encode("utf-8")
    return bytes(out)


@dataclass
class Masker:
    """Replaces every occurrence of the secret values (bytes) by `***`."""

    secrets: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        # longest first, so a secret that contains another is masked whole
        self.secrets = sorted({s for s in self.secrets if s}, key=len, reverse=True)

    @property
    def longest(self) -> int:
        return len(self.secrets[0]) if self.secrets else 0

    def mask(self, data: bytes) -> bytes:
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, MASK)
        return data

    def mask_text(self, text: str) -> str:
        return self.mask(text.encode("utf-8", errors="surrogateescape")).decode(
            "utf-8", errors="surrogateescape"
        )


@dataclass
class LineSplitter:
    """Bytes in (any chunking), complete masked lines out: (bytes, continued)."""

    masker: Masker
    pending: bytes = b""

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bool]]:
        self.pending += chunk
        while True:
            newline = self.pending.find(b"\n")
            if newline < 0:
                break
            line, self.pending = self.pending[:newline], self.pending[newline + 1 :]
            yield from self._pieces(self.masker.mask(line), final=True)
        if len(self.pending) > LINE_MAX_BYTES:
            yield from self._cut_pending()

    def close(self) -> Iterator[tuple[bytes, bool]]:
        if self.pending:
            line, self.pending = self.pending, b""
            yield from self._pieces(self.masker.mask(line), final=True)

    def _cut_pending(self) -> Iterator[tuple[bytes, bool]]:
        """A line without end yet: store its head, keep a tail that may begin a secret."""
        masked = self.masker.mask(self.pending)
        # keep what may begin a secret, and at least one byte: the line's last piece, the one
        # not `continued`, comes at its end
        keep = max(self.masker.longest - 1, 1)
        cut = len(masked) - keep
        head, self.pending = masked[:cut], masked[cut:]
        yield from self._pieces(head, final=False)

    @staticmethod
    def _pieces(line: bytes, *, final: bool) -> Iterator[tuple[bytes, bool]]:
        for start in range(0, max(len(line), 1), LINE_MAX_BYTES):
            last = start + LINE_MAX_BYTES >= len(line)
            yield line[start : start + LINE_MAX_BYTES], not (final and last)
