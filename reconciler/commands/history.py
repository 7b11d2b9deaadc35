"""`reconcile history [show ID]`: past applies, newest first, from ops.reconcile_applies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from reconciler.db import migrations
from reconciler.db.connection import connect, user_errors
from reconciler.db.queries import query
from reconciler.db.target import open_target
from reconciler.errors import ReconcilerError

Echo = Callable[[str], None]
ACTIONS = ("create", "update", "adopt", "archive", "disable", "delete", "runs")
_SYMBOLS = {"create": "+", "update": "~", "adopt": "~"}


def _rows(url: str | None, lock_timeout_s: float, name: str, params: dict[str, Any]) -> list[Any]:
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
        user_errors("reading the history"),
    ):
        migrations.require_current(migrations.read_status(conn))
        return conn.execute(query(name), params).fetchall()


def run(url: str | None, lock_timeout_s: float, limit: int, output: str, out: Echo) -> int:
    rows = _rows(url, lock_timeout_s, "history", {"limit": limit})
    if output == "json":
        out(json.dumps([_entry(*row) for row in rows], indent=2, default=str))
    elif not rows:
        out("No applies yet.")
    else:
        out("\n".join(_line(*row) for row in rows))
    return 0


def show(url: str | None, lock_timeout_s: float, apply_id: str, output: str, out: Echo) -> int:
    """One apply: who, when, and each change it made."""
    prefix = apply_id.strip().lower()
    if len(prefix) < 4 or any(c not in "0123456789abcdef-" for c in prefix):
        raise ReconcilerError(
            f"{apply_id!r} is not an apply's id: give at least 4 characters of an id from "
            "`reconcile history`"
        )
    rows = _rows(url, lock_timeout_s, "history_show", {"prefix": prefix})
    if not rows:
        raise ReconcilerError(f"no apply with an id starting {prefix} (see `reconcile history`)")
    if len(rows) > 1:
        raise ReconcilerError(f"more than one apply's id starts {prefix}: give more of it")
    *head, plan = rows[0]
    if output == "json":
        out(json.dumps({**_entry(*head), "plan": plan}, indent=2, default=str))
        return 0
    out(_details(_entry(*head), plan))
    return 0


def _entry(*row: Any) -> dict[str, Any]:
    """A row of `history` (id, when, commit, ref, role, actor, summary) as the JSON entry."""
    id_, when, commit, ref, who, actor, summary = row
    return {
        "id": id_,
        "applied_at": when.isoformat(),
        "commit": commit,
        "ref": ref,
        "applied_by": who,
        "actor": actor,
        "summary": summary,
    }


def _counts(summary: dict[str, int]) -> str:
    return ", ".join(f"{summary[a]} {a}" for a in ACTIONS if summary.get(a)) or "no changes"


def _line(*row: Any) -> str:
    id_, when, commit, ref, who, actor, summary = row
    by = f"{actor} ({who})" if actor and actor != who else who
    return (
        f"{id_[:8]}  {when:%Y-%m-%d %H:%M:%S%z}  {(commit or '-')[:12]:12}  {ref or '-':16}  "
        f"{by:20}  {_counts(summary)}"
    )


def _details(entry: dict[str, Any], plan: dict[str, Any]) -> str:
    lines = [
        f"apply {entry['id']}",
        f"applied at: {entry['applied_at']}",
        f"by: {entry['actor'] or '-'} (database role {entry['applied_by']})",
        f"commit: {entry['commit'] or '-'} on {entry['ref'] or '-'}",
        f"summary: {_counts(entry['summary'])}",
        "",
    ]
    lines += [f"  + user {email}" for email in plan.get("users", [])]
    for change in plan.get("changes", []):
        symbol = _SYMBOLS.get(change["action"], "-")
        action = "" if change["action"] in ("create", "update") else f" ({change['action']})"
        fields = f": {', '.join(change['fields'])}" if change.get("fields") else ""
        lines.append(f"  {symbol} {change['kind']} {change['key']}{action}{fields}")
    if plan.get("changes_omitted"):
        lines.append(f"  ... and {plan['changes_omitted']} more change(s), not recorded")
    lines += [f"  + run {r['workflow']} ({r['idempotency_key']})" for r in plan.get("runs", [])]
    return "\n".join(lines)
