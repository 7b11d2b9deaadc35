"""Cron schedules of `on: [schedule]` workflows: validation and slot arithmetic. Pure.

croniter does the calendar work (field ranges, steps, lists, `L`, day-of-month/day-of-week
rules, time zones and DST through aware datetimes); what is ours is the contract: 5 fields,
UTC unless a time zone is named, and after downtime only the latest missed slot runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from croniter import croniter

MISSED_COUNT_LIMIT = 10_000  # counting missed slots stops here (a per-minute schedule, a week)


def _croniter(expression: str, start: datetime) -> croniter:
    """croniter, imported when first needed: a command on cached files does not load it."""
    from croniter import croniter  # noqa: PLC0415

    return croniter(expression, start)


def schedule_problem(expression: str) -> str | None:
    """Why the cron expression is not usable, or None. Five fields, as GitHub Actions has."""
    if len(expression.split()) != 5:
        return f"schedule {expression!r} must have 5 fields: minute hour day month weekday"
    from croniter import croniter  # noqa: PLC0415  (see _croniter)

    if not croniter.is_valid(expression):
        return f"schedule {expression!r} is not a valid cron expression"
    return None


def timezone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"time zone {name!r} is unknown; use an IANA name such as Europe/Brussels"
    return None


def zone(name: str | None) -> tzinfo:
    return ZoneInfo(name) if name else UTC


@dataclass(frozen=True)
class Due:
    slot: datetime | None  # the latest slot in (after, now], or None
    missed: int  # earlier slots in (after, slot) that will not run
    next: datetime  # the first slot after now


def due(expression: str, timezone: str | None, after: datetime, now: datetime) -> Due:
    """Which slot a worker enqueues at `now`, given the last slot handled (`after`)."""
    tz = zone(timezone)
    local = now.astimezone(tz)
    upcoming = _croniter(expression, local).get_next(datetime)
    # a slot at exactly `now` is due: look back from just after it
    latest = _croniter(expression, local + timedelta(microseconds=1)).get_prev(datetime)
    if latest <= after:
        return Due(None, 0, upcoming.astimezone(UTC))
    missed = 0
    walker = _croniter(expression, after.astimezone(tz))
    while missed < MISSED_COUNT_LIMIT and walker.get_next(datetime) < latest:
        missed += 1
    return Due(latest.astimezone(UTC), missed, upcoming.astimezone(UTC))


def next_slots(
    expression: str, timezone: str | None, now: datetime, count: int = 3
) -> list[datetime]:
    walker = _croniter(expression, now.astimezone(zone(timezone)))
    return [walker.get_next(datetime).astimezone(UTC) for _ in range(count)]
