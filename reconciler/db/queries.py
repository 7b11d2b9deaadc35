"""Named SQL queries from `sql/*.sql`: blocks headed `-- name: NAME`, loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _all() -> dict[str, bytes]:
    queries: dict[str, bytes] = {}
    for entry in resources.files("reconciler.db").joinpath("sql").iterdir():
        if entry.name.endswith(".sql"):
            parts = _HEADER.split(entry.read_text(encoding="utf-8"))
            for name, body in zip(parts[1::2], parts[2::2], strict=True):
                queries[name] = body.strip().encode()
    return queries


def query(name: str) -> bytes:
    return _all()[name]
