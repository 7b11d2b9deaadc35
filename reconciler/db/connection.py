"""Connections to the control-plane database, and psycopg errors turned into user errors."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reconciler.errors import DatabaseUnavailable, LockTimeout, ReconcilerError

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "ops-reconciler"


def describe(url: str) -> str:
    """The database a URL points at, without its password: `user@host:port/dbname`."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}".lstrip("@")


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """A connection, or DatabaseUnavailable with one line that says what and where."""
    try:
        conninfo = make_conninfo(
            url, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME
        )
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailable(f"invalid database URL: {first_line(exc)}") from None
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database {describe(url)}: {reason(exc)} "
            "(check --database-url or DATABASE_URL)"
        ) from None


def advisory_xact_lock(conn: psycopg.Connection[Any], key: int, timeout_s: float) -> None:
    """Take a transaction-level advisory lock, waiting at most `timeout_s` (LockTimeout)."""
    timeout_ms = max(1, int(timeout_s * 1000))
    conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{timeout_ms}ms")))
    conn.execute("select pg_advisory_xact_lock(%s)", (key,))
    conn.execute("set local lock_timeout = 0")


def lock_key(name: str) -> int:
    """A stable advisory-lock key: the first 8 bytes of sha256(name), signed."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def user_errors(action: str) -> Iterator[None]:
    """Turn the database errors a user can act on into one-line ReconcilerErrors."""
    try:
        yield
    except pg_errors.LockNotAvailable:
        raise LockTimeout(
            f"{action}: another reconcile holds the lock; try again when it has finished"
        ) from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"{action}: lost the database connection: {reason(exc)}"
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ReconcilerError(
            f"{action}: {first_line(exc)} (connect as the schema owner)"
        ) from None


def reason(exc: BaseException) -> str:
    """libpq's message without its boilerplate, on one line."""
    text = first_line(exc)
    for prefix in ("connection failed: ", "connection is bad: "):
        text = text.removeprefix(prefix)
    return text


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
