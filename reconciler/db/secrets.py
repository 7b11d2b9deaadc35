"""The one place that knows which strings are secrets, and takes them out of any text.

Every database URL or conninfo string the process is given is `remember`ed (the CLI does it for
--database-url and DATABASE_URL, `connect` for whatever it connects to); every line the CLI
prints, tracebacks included, goes through `redact`. A password is found whatever the shape of
the string: what libpq parses, and what a reader would take for one in a URL libpq refuses
(`%zz`, a space, `%00`, an unclosed `[`, an unencoded `@`), or in key=value settings.
"""

from __future__ import annotations

import contextlib
import os
import re
from urllib.parse import quote, unquote

MASK = "***"
_URI_USERINFO = re.compile(r"^\s*[A-Za-z][\w+.-]*://(?P<userinfo>.*)@", re.DOTALL)
_URI_PARAM = re.compile(r"[?&]password=(?P<value>[^&#]*)", re.IGNORECASE)
_KEYWORD = re.compile(r"(?:^|\s)password\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)
_SEPARATORS = re.compile(r"[@:/?#\[\]\s]+")
_MIN_FRAGMENT = 3

_known: set[str] = set()


def remember(conninfo: str | None) -> None:
    """Treat the passwords of this URL or conninfo string as secrets from now on."""
    if conninfo:
        _known.update(secrets_of(conninfo))


def remember_environment() -> None:
    remember(os.environ.get("DATABASE_URL"))
    if password := os.environ.get("PGPASSWORD"):
        _known.update(_forms(password))


def secrets_of(conninfo: str) -> set[str]:
    """Every string of `conninfo` that is, or may be, a password (in the forms it may be shown)."""
    # imported here: a command given no database (validate, diff) never loads psycopg (70 ms)
    from psycopg import ProgrammingError  # noqa: PLC0415
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    candidates: list[str] = []
    # when malformed, the patterns below still find what a reader would call the password
    with contextlib.suppress(ProgrammingError):
        candidates.append(str(conninfo_to_dict(conninfo).get("password") or ""))
    if match := _URI_USERINFO.match(conninfo):
        _, colon, password = match["userinfo"].partition(":")
        if colon:
            candidates.append(password)
    candidates += [m["value"] for m in _URI_PARAM.finditer(conninfo)]
    for m in _KEYWORD.finditer(conninfo):
        value = m["value"]
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value.strip("'"))
        candidates.append(value)
    found: set[str] = set()
    for candidate in filter(None, candidates):
        found |= _forms(candidate)
        # libpq may cut an unencoded password at an `@` or `:` and show the rest as a host
        found |= {f for f in _SEPARATORS.split(candidate) if len(f) >= _MIN_FRAGMENT}
    return found


def _forms(password: str) -> set[str]:
    decoded = unquote(password, errors="surrogateescape")
    return {f for f in (password, decoded, quote(decoded, safe=""), repr(password)[1:-1]) if f}


def redact(text: str) -> str:
    """`text` with every known secret replaced by ***, longest first."""
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text
