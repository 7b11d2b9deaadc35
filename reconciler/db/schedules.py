"""The schedule tick every worker makes: enqueue the due slot of each scheduled workflow.

The database decides who enqueues a slot (ops.enqueue_scheduled_run moves the workflow's
last_scheduled_slot forward only once), so any number of workers may tick at once; the slots
are computed here with croniter (reconciler.core.cron)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from reconciler.core import cron
from reconciler.db.queries import query


def tick(conn: psycopg.Connection[Any], now: datetime) -> int:
    """Enqueue the runs of the slots due at `now`; returns how many this call enqueued."""
    enqueued = 0
    due = conn.execute(query("due_schedules"), {"now": now}).fetchall()
    for workflow_id, expression, timezone, after in due:
        if cron.schedule_problem(expression) or (timezone and cron.timezone_problem(timezone)):
            continue  # written by hand past validation: nothing sensible to run
        slot = cron.due(expression, timezone, after, now)
        row = conn.execute(
            query("enqueue_scheduled_run"),
            {"id": workflow_id, "slot": slot.slot, "next": slot.next, "missed": slot.missed},
        ).fetchone()
        enqueued += bool(row and row[0])
    return enqueued
