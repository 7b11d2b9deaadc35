"""`reconcile worker` and `reconcile runs list | show | logs | cancel | cleanup`."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from reconciler.db import migrations
from reconciler.db.connection import bound_waits, connect, user_errors
from reconciler.db.queries import query
from reconciler.db.target import open_target
from reconciler.errors import ReconcilerError
from reconciler.worker import Worker, WorkerOptions, hide_from_steps

Echo = Callable[[str], None]
FINAL = ("succeeded", "failed", "canceled")


def worker(url: str | None, lock_timeout_s: float, options: dict[str, Any], out: Echo) -> int:
    worker_id = options["worker_id"] or f"{socket.gethostname()}-{os.getpid()}"
    hide_from_steps()
    with open_target(url, lock_timeout_s=lock_timeout_s) as target:
        with connect(target.conninfo) as conn, user_errors("starting the worker"):
            migrations.require_current(migrations.read_status(conn))
        out(f"worker {worker_id}: waiting for runs on {target.description}")
        return Worker(
            target.conninfo,
            WorkerOptions(
                worker_id=worker_id,
                artifacts_dir=options["artifacts_dir"],
                lease_s=options["lease"],
                poll_s=options["poll"],
                once=options["once"],
                concurrency=options["concurrency"],
            ),
        ).run()


def list_runs(url: str | None, lock_timeout_s: float, filters: dict[str, Any], out: Echo) -> int:
    rows = _read(url, lock_timeout_s, lambda c: c.execute(query("runs_list"), filters).fetchall())
    if filters.get("output") == "json":
        keys = (
            "id",
            "project",
            "workflow",
            "run_number",
            "status",
            "attempt",
            "claimed_by",
            "created_at",
            "finished_at",
            "exit_code",
            "error_message",
        )
        out(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=str, indent=2))
        return 0
    for row in rows:
        run_id, project, workflow, number, status, attempt, worker_id = row[:7]
        out(
            f"{run_id}  {project}/{workflow} #{number}  {status:9}  attempt {attempt}"
            f"{'  ' + worker_id if worker_id else ''}"
        )
    return 0


def show(url: str | None, lock_timeout_s: float, run_id: str, out: Echo) -> int:
    _check_id(run_id)
    events, artifacts = _read(
        url,
        lock_timeout_s,
        lambda c: (
            c.execute(query("run_events"), {"run_id": run_id}).fetchall(),
            c.execute(query("run_artifacts"), {"run_id": run_id}).fetchall(),
        ),
    )
    if not events:
        raise ReconcilerError(f"no run {run_id} (or it has no events yet)")
    out("events:")
    out(
        "\n".join(f"  {at:%Y-%m-%d %H:%M:%S}  {kind:12}  {message}" for at, kind, message in events)
    )
    out("artifacts:" if artifacts else "artifacts: none")
    out("\n".join(f"  {key}  {size} bytes  {checksum}" for key, size, checksum, *_ in artifacts))
    return 0


def logs(url: str | None, lock_timeout_s: float, run_id: str, follow: bool, out: Echo) -> int:
    """The run's log lines; with `follow`, keep printing new ones until the run is over."""
    _check_id(run_id)
    after: Any = "-infinity"
    while True:
        lines, status = _read(url, lock_timeout_s, _logs_after(run_id, after))
        if status is None:
            raise ReconcilerError(f"no run {run_id}")
        for at, level, message in lines:
            out(f"{at:%H:%M:%S} {level:5} {message}")
            after = at
        if not follow or (status[0] in FINAL and not lines):
            return 0
        if not lines:
            time.sleep(0.5)


def _logs_after(run_id: str, after: Any) -> Callable[[Any], Any]:
    def read(conn: Any) -> Any:
        lines = conn.execute(query("run_logs_after"), {"run_id": run_id, "after": after})
        status = conn.execute(query("run_status"), {"run_id": run_id}).fetchone()
        return lines.fetchall(), status

    return read


def cancel(
    url: str | None, lock_timeout_s: float, run_id: str, reason: str | None, out: Echo
) -> int:
    _check_id(run_id)
    answer = _read(
        url,
        lock_timeout_s,
        lambda c: c.execute("select ops.cancel_run(%s, %s)", (run_id, reason)).fetchone()[0],
    )
    if not answer.get("ok"):
        raise ReconcilerError(f"cannot cancel run {run_id}: {answer.get('error')}")
    out(f"run {run_id}: {answer['status'].replace('_', ' ')}")
    return 0


def cleanup(url: str | None, lock_timeout_s: float, log_days: int, out: Echo) -> int:
    """Delete expired artifacts (rows and stored files) and old logs of finished runs."""

    def work(conn: Any) -> tuple[list[str], int]:
        urls = [row[0] for row in conn.execute(query("expired_artifacts")).fetchall()]
        deleted = conn.execute(query("old_logs"), {"days": log_days}).rowcount
        return urls, deleted

    urls, deleted = _read(url, lock_timeout_s, work)
    for artifact_url in urls:
        parsed = urlparse(artifact_url)
        if parsed.scheme == "file":
            Path(unquote(parsed.path)).unlink(missing_ok=True)
    out(
        f"deleted {len(urls)} expired artifact(s) and {deleted} log line(s) older than "
        f"{log_days} day(s)"
    )
    return 0


def _read(url: str | None, lock_timeout_s: float, action: Callable[[Any], Any]) -> Any:
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
        user_errors("reading the runs"),
    ):
        migrations.require_current(migrations.read_status(conn))
        bound_waits(conn, lock_timeout_s)  # cancel and cleanup lock rows: never wait forever
        result = action(conn)
        conn.commit()
        return result


def _check_id(run_id: str) -> None:
    try:
        uuid.UUID(run_id)
    except ValueError:
        raise ReconcilerError(f"{run_id!r} is not a run id (a uuid)") from None
