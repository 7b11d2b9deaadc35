"""`reconcile db migrate | status | drop`."""

from __future__ import annotations

import json
from collections.abc import Callable

from reconciler.db import migrations
from reconciler.db.connection import connect
from reconciler.db.migrations import SchemaStatus
from reconciler.db.target import Target, open_target
from reconciler.errors import ConfirmationRequired

Echo = Callable[[str], None]
AUTH_WORDS = {
    "supabase": "found Supabase's auth schema (auth.users)",
    "compatible": "installed the compatible auth schema (plain PostgreSQL)",
    "missing": "no auth schema yet (installed by the first migration)",
}


def migrate(url: str | None, lock_timeout_s: float, echo: Echo) -> int:
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
    ):
        applied = migrations.migrate(conn, lock_timeout_s)
        status = migrations.read_status(conn)
    for migration in applied:
        echo(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        echo(f"nothing to migrate: {target.description} is at version {status.version}")
    else:
        echo(f"{target.description} is at version {status.version}; {AUTH_WORDS[status.auth]}")
    return 0


def status(url: str | None, lock_timeout_s: float, output: str, echo: Echo) -> int:
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
    ):
        current = migrations.read_status(conn)
    echo(
        render_status_json(target, current) if output == "json" else render_status(target, current)
    )
    migrations.require_current(current)
    return 0


def drop(url: str | None, lock_timeout_s: float, confirmed: bool, echo: Echo) -> int:
    if not confirmed:
        raise ConfirmationRequired(
            "`reconcile db drop` deletes every ops.* table with all its rows; "
            "run it again with --yes to confirm"
        )
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
    ):
        migrations.drop(conn, lock_timeout_s)
    echo(f"dropped the ops schema from {target.description}")
    return 0


def render_status(target: Target, status: SchemaStatus) -> str:
    lines = [
        f"database: {target.description}",
        f"schema version: {status.version} (this ops-reconciler ships {status.latest})",
        f"auth: {AUTH_WORDS[status.auth]}",
    ]
    if status.pending:
        lines.append("pending migrations (run `reconcile db migrate`):")
        lines += [f"  {m.version:04d}_{m.name}" for m in status.pending]
    lines += [
        f"warning: migration {a.version:04d}_{a.name} was edited after it was applied"
        for a in status.edited
    ]
    lines.append("status: up to date" if status.up_to_date else "status: not up to date")
    return "\n".join(lines)


def render_status_json(target: Target, status: SchemaStatus) -> str:
    return json.dumps(
        {
            "database": target.description,
            "embedded": target.embedded,
            "version": status.version,
            "latest": status.latest,
            "pending": [f"{m.version:04d}_{m.name}" for m in status.pending],
            "unknown": [f"{a.version:04d}_{a.name}" for a in status.unknown],
            "edited": [f"{a.version:04d}_{a.name}" for a in status.edited],
            "auth": status.auth,
            "up_to_date": status.up_to_date,
        },
        indent=2,
    )
