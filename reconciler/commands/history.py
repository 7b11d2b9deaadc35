"""`reconcile history`: past applies, newest first, from ops.reconcile_applies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from reconciler.db import migrations
from reconciler.db.connection import connect, user_errors
from reconciler.db.queries import query
from reconciler.db.target import open_target

Echo = Callable[[str], None]
ACTIONS = ("create", "update", "adopt", "archive", "disable", "delete", "runs")


def run(url: str | None, lock_timeout_s: float, limit: int, output: str, out: Echo) -> int:
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
        user_errors("reading the history"),
    ):
        migrations.require_current(migrations.read_status(conn))
        rows: list[tuple[Any, ...]] = conn.execute(query("history"), {"limit": limit}).fetchall()
    if output == "json":
        out(json.dumps([_entry(*row) for row in rows], indent=2, default=str))
    elif not rows:
        out("No applies yet.")
    else:
        out("\n".join(_line(*row) for row in rows))
    return 0


def _entry(
    when: Any, commit: str | None, ref: str | None, who: str, summary: dict[str, int]
) -> dict[str, Any]:
    return {
        "applied_at": when.isoformat(),
        "commit": commit,
        "ref": ref,
        "applied_by": who,
        "summary": summary,
    }


def _line(when: Any, commit: str | None, ref: str | None, who: str, summary: dict[str, int]) -> str:
    counts = ", ".join(f"{summary[a]} {a}" for a in ACTIONS if summary.get(a))
    return (
        f"{when:%Y-%m-%d %H:%M:%S%z}  {(commit or '-')[:12]:12}  {ref or '-':16}  "
        f"{who:12}  {counts or 'no changes'}"
    )
