"""The ops.* schema as numbered SQL migrations: which are pending, applying them, the status.

Migrations are `migrations/NNNN_name.sql` inside this package, never edited once released.
`migrate` applies every pending one in a single transaction under an advisory lock, and records
each in ops.schema_migrations; a second run finds nothing pending and changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources

import psycopg

from reconciler.db.connection import advisory_xact_lock, lock_key, user_errors
from reconciler.errors import SchemaConflict, SchemaTooNew, SchemaTooOld

MIGRATE_LOCK_KEY = lock_key("ops-reconciler:migrate")
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
COMPAT_AUTH_MARK = "ops-reconciler:"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class SchemaStatus:
    """What `reconcile db status` reports."""

    version: int  # highest applied migration, 0 for none
    latest: int  # highest migration this code ships
    pending: tuple[Migration, ...]
    unknown: tuple[AppliedMigration, ...]  # applied, but newer than this code
    edited: tuple[AppliedMigration, ...]  # applied from a file that differs from the shipped one
    auth: str  # "supabase" | "compatible" | "missing"

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.unknown


@cache
def shipped() -> tuple[Migration, ...]:
    """Every migration this code ships, in order."""
    folder = resources.files("reconciler.db").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return tuple(sorted(found, key=lambda m: m.version))


def rollback_sql() -> str:
    return resources.files("reconciler.db").joinpath("rollback.sql").read_text(encoding="utf-8")


def compute_status(
    migrations: tuple[Migration, ...], applied: dict[int, AppliedMigration], auth: str
) -> SchemaStatus:
    """Compare shipped migrations with the applied ones. Pure."""
    known = {m.version: m for m in migrations}
    return SchemaStatus(
        version=max(applied, default=0),
        latest=max(known, default=0),
        pending=tuple(m for m in migrations if m.version not in applied),
        unknown=tuple(a for v, a in sorted(applied.items()) if v not in known),
        edited=tuple(
            a for v, a in sorted(applied.items()) if v in known and known[v].checksum != a.checksum
        ),
        auth=auth,
    )


def read_status(conn: psycopg.Connection[tuple[object, ...]]) -> SchemaStatus:
    with user_errors("reading the schema status"):
        return compute_status(shipped(), _applied(conn), _auth_kind(conn))


def require_current(status: SchemaStatus) -> None:
    """Refuse to work on a schema that is older or newer than this code."""
    if status.unknown:
        raise SchemaTooNew(
            f"the database schema is at version {status.version}, newer than this "
            f"ops-reconciler knows ({status.latest}); upgrade ops-reconciler"
        )
    if status.pending:
        raise SchemaTooOld(
            f"the database schema is at version {status.version}, this ops-reconciler needs "
            f"{status.latest}; run `reconcile db migrate`"
        )


def migrate(
    conn: psycopg.Connection[tuple[object, ...]], lock_timeout_s: float
) -> tuple[Migration, ...]:
    """Apply every pending migration in one transaction; returns those applied."""
    with user_errors("migrating the schema"), conn.transaction():
        _lock(conn, lock_timeout_s)
        _ensure_bookkeeping(conn)
        status = compute_status(shipped(), _applied(conn), "n/a")
        if status.unknown:
            require_current(status)
        for migration in status.pending:
            _apply(conn, migration)
        return status.pending


def drop(conn: psycopg.Connection[tuple[object, ...]], lock_timeout_s: float) -> None:
    """Remove everything the migrations installed (the seed's rollback), in one transaction."""
    with user_errors("dropping the schema"), conn.transaction():
        _lock(conn, lock_timeout_s)
        conn.execute(rollback_sql().encode())


def _lock(conn: psycopg.Connection[tuple[object, ...]], lock_timeout_s: float) -> None:
    advisory_xact_lock(conn, MIGRATE_LOCK_KEY, lock_timeout_s)


def _ensure_bookkeeping(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("create schema if not exists ops")
    conn.execute(
        """
        create table if not exists ops.schema_migrations (
          version integer primary key,
          name text not null,
          checksum text not null,
          applied_at timestamptz not null default now(),
          applied_by text not null default current_user
        )
        """
    )


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())
    except (
        psycopg.errors.RaiseException,
        psycopg.errors.DuplicateObject,
        psycopg.errors.DuplicateTable,
    ) as exc:
        detail = exc.diag.message_primary or str(exc)
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise SchemaConflict(
            f"migration {migration.version:04d}_{migration.name} failed: {detail}{hint}"
        ) from None
    conn.execute(
        "insert into ops.schema_migrations (version, name, checksum) values (%s, %s, %s)",
        (migration.version, migration.name, migration.checksum),
    )


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, AppliedMigration]:
    row = conn.execute("select to_regclass('ops.schema_migrations') is not null").fetchone()
    if not row or not row[0]:
        return {}
    rows = conn.execute(
        "select version, name, checksum, applied_at from ops.schema_migrations"
    ).fetchall()
    return {
        int(str(v)): AppliedMigration(int(str(v)), str(n), str(c), a)  # type: ignore[arg-type]
        for v, n, c, a in rows
    }


def _auth_kind(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute(
        """
        select to_regclass('auth.users') is not null,
               coalesce(obj_description(to_regnamespace('auth'), 'pg_namespace'), '')
        """
    ).fetchone()
    assert row is not None
    has_users, comment = row
    if not has_users:
        return "missing"
    return "compatible" if str(comment).startswith(COMPAT_AUTH_MARK) else "supabase"
