"""Connections to the control-plane database, and psycopg errors turned into user errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reconciler.db.queries import query
from reconciler.db.secrets import redact, remember
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
    """A connection, or DatabaseUnavailable with one line that says what and where (never the
    password: see secrets.py)."""
    remember(url)
    try:
        conninfo = make_conninfo(
            url, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME
        )
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailable(
            f"invalid database URL: {unquoted(first_line(exc))} (write a '%', '@', ':', '/', "
            "'?', '#', '[' or space of the user name or password percent-encoded: %25, %40, "
            "%3A, %2F, %3F, %23, %5B, %20)"
        ) from None
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except (psycopg.OperationalError, psycopg.ProgrammingError, ValueError) as exc:
        raise DatabaseUnavailable(
            redact(
                f"cannot connect to the database {describe(url)}: {reason(exc)} "
                "(check --database-url or DATABASE_URL)"
            )
        ) from None


def unquoted(message: str) -> str:
    """libpq's parse error without the parts of the URL it quotes (they may hold the password).

    Everything from the first quote to the last is left out, whatever it holds: pairing the
    quotes is not safe, as the quoted text may hold quotes itself (`missing "=" after
    "u:pass@host"` came out as `"="..."u:pass@host"` when they were paired)."""
    head, quote, rest = message.partition('"')
    if not quote:
        return redact(message)
    if rest.startswith('=" after "'):
        head, rest = head + '"=" after ', rest[len('=" after ') :]
    tail = rest.rpartition('"')[2] if '"' in rest else ""
    return redact(f'{head}"..."{tail}')


def bound_waits(conn: psycopg.Connection[Any], timeout_s: float) -> None:
    """Every lock wait of the rest of the transaction (locks of rows and tables included, not only
    the first one) ends after `timeout_s` with LockNotAvailable."""
    timeout_ms = max(1, int(timeout_s * 1000))
    conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{timeout_ms}ms")))


def advisory_xact_lock(conn: psycopg.Connection[Any], key: int, timeout_s: float) -> None:
    """Take a transaction-level advisory lock (the migrations': the schema may not exist yet);
    this and every later lock wait of the transaction last at most `timeout_s`."""
    bound_waits(conn, timeout_s)
    conn.execute("select pg_advisory_xact_lock(%s)", (key,))


def apply_lock(conn: psycopg.Connection[Any], timeout_s: float) -> None:
    """The lock of plans and applies: the row of ops.reconcile_lock, which only the reconciler
    may lock (any role can take an advisory lock). Every later lock wait is bounded too."""
    bound_waits(conn, timeout_s)
    conn.execute(query("lock_apply"))


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
            f"{action}: another reconcile holds the lock, or another transaction holds a lock "
            "on what it must change, for longer than --lock-timeout; nothing was written; "
            "try again when it has finished"
        ) from None
    except (pg_errors.QueryCanceled, pg_errors.DeadlockDetected) as exc:
        raise LockTimeout(
            redact(f"{action}: {first_line(exc)}; nothing was written; try again")
        ) from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            redact(f"{action}: lost the database connection: {reason(exc)}")
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ReconcilerError(
            redact(
                f"{action}: {first_line(exc)} (connect as the schema owner; a read-only login "
                "can run `plan --read-only`)"
            )
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


def refused_as_error(action: str, call: Callable[[], Any]) -> Any:
    """The database's refusals of a start or retry (a workflow that cannot run, a run that is
    not final, nothing found), as one line a user can act on."""
    try:
        return call()
    except (
        pg_errors.InvalidParameterValue,
        pg_errors.ObjectNotInPrerequisiteState,
        pg_errors.NoDataFound,
    ) as exc:
        message = str(exc).splitlines()[0].split(": ", 1)[-1]
        raise ReconcilerError(f"cannot {action}: {message}") from None
