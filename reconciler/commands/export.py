"""`reconcile export [-C DIR] [--project SLUG]`: the YAML files of the rows a database holds,
for a team whose database was filled by hand or by SQL. Then `reconcile plan --adopt`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from reconciler.core.export import files_of
from reconciler.db import migrations, state
from reconciler.db.connection import connect, user_errors
from reconciler.db.queries import query
from reconciler.db.target import open_target
from reconciler.errors import ReconcilerError
from reconciler.files import state_files

Echo = Callable[[str], None]
GLOBAL_GROUPS = {"@tool", "@upgrade_advisory"}


def run(
    folder: Path, url: str | None, lock_timeout_s: float, projects: tuple[str, ...], out: Echo
) -> int:
    if folder.exists() and state_files(folder):
        raise ReconcilerError(
            f"{folder} already has state files; export into an empty folder (or a new one)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with (
        open_target(url, lock_timeout_s=lock_timeout_s, repository=folder) as target,
        connect(target.conninfo) as conn,
        user_errors("export"),
    ):
        migrations.require_current(migrations.read_status(conn))
        conn.rollback()  # one snapshot for every read below
        conn.execute("set transaction isolation level repeatable read, read only")
        slugs = {str(slug) for (slug,) in conn.execute(query("project_slugs"))}
        if unknown := sorted(set(projects) - slugs):
            raise ReconcilerError(f"--project {unknown[0]}: no such project in the database")
        groups: set[str] = set(projects) if projects else slugs | GLOBAL_GROUPS
        actual = state.read(conn, groups)
        rows = state.read_rows(conn, actual, list(actual.index))
    written = files_of(rows.values())
    for relative, text in written.items():
        _write(folder / relative, text)
    out(
        f"Exported {len(rows)} resource(s) from {target.description} into {len(written)} "
        f"file(s) in {folder}. Next: `reconcile plan -C {folder} --adopt`."
    )
    return 0


def _write(path: Path, text: str) -> None:
    """Each file whole or not at all (written aside, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)
