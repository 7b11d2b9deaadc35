"""`reconcile worker` and `reconcile runs list | show | logs | cancel | cleanup | start | retry |
schedule`."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from reconciler import checkout
from reconciler.core import cron
from reconciler.db import migrations
from reconciler.db.connection import bound_waits, connect, refused_as_error, user_errors
from reconciler.db.embedded import default_state_dir
from reconciler.db.queries import query
from reconciler.db.target import open_target
from reconciler.errors import ReconcilerError
from reconciler.worker import ExecutorKind, Setup, Worker, WorkerOptions
from reconciler.worker import secrets as step_secrets
from reconciler.worker.secrets import SecretStore

Echo = Callable[[str], None]
FINAL = ("succeeded", "failed", "canceled")


def worker(url: str | None, lock_timeout_s: float, options: dict[str, Any], out: Echo) -> int:
    worker_id = options["worker_id"] or f"{socket.gethostname()}-{os.getpid()}"
    setup = _setup(options, out)
    with open_target(url, lock_timeout_s=lock_timeout_s) as target:
        with connect(target.conninfo) as conn, user_errors("starting the worker"):
            migrations.require_current(migrations.read_status(conn))
        running = Worker(
            target.conninfo,
            WorkerOptions(
                worker_id=worker_id,
                artifacts_dir=options["artifacts_dir"],
                lease_s=options["lease"],
                poll_s=options["poll"],
                once=options["once"],
                concurrency=options["concurrency"],
            ),
            setup,
        )
        running.check()
        out(f"worker {worker_id}: waiting for runs on {target.description}")
        return running.run()


def _setup(options: dict[str, Any], out: Echo) -> Setup:
    """The operator's choices: executor, secrets source (read once, then out of reach)."""
    secrets_file: Path | None = options.get("secrets_file")
    prefix: str | None = options.get("secrets_env_prefix")
    if secrets_file and prefix:
        raise ReconcilerError("give --secrets-file or --secrets-env-prefix, not both")
    store = SecretStore()
    if secrets_file:
        store = step_secrets.from_file(secrets_file)
    elif prefix:
        store = step_secrets.from_environment(prefix)
    executor = options.get("executor")
    mirrors: Path = options.get("mirrors_dir") or default_state_dir() / "mirrors"
    return Setup(
        executor=ExecutorKind(executor) if executor else None,
        secrets=store,
        checkout=lambda repository, commit, dest: checkout.materialize(
            repository, commit, dest, mirrors.resolve()
        ),
        hidden=(mirrors.resolve(), *((secrets_file.resolve(),) if secrets_file else ())),
        say=out,
    )


def list_runs(url: str | None, lock_timeout_s: float, filters: dict[str, Any], out: Echo) -> int:
    def read(conn: Any) -> Any:
        return (
            conn.execute(query("runs_list"), filters).fetchall(),
            conn.execute(query("schedules"), {"project": filters.get("project")}).fetchall(),
        )

    rows, schedules = _read(url, lock_timeout_s, read)
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
    if soonest := _next_scheduled(schedules, datetime.now(UTC)):
        workflow, slot = soonest
        out(
            f"next scheduled: {workflow} at {slot:%Y-%m-%d %H:%M} UTC "
            "(`reconcile runs schedule` shows every scheduled workflow's slots)"
        )
    return 0


def _next_scheduled(schedules: list[Any], now: datetime) -> tuple[str, datetime] | None:
    """The scheduled workflow whose next slot comes first, with that slot (active ones)."""
    slots = [
        (cron.next_slots(expression, timezone, now, 1)[0], workflow)
        for workflow, expression, timezone, active, _ in schedules
        if active and not cron.schedule_problem(expression)
    ]
    if not slots:
        return None
    slot, workflow = min(slots)
    return workflow, slot


def show(url: str | None, lock_timeout_s: float, run_id: str, out: Echo) -> int:
    def read(conn: Any) -> Any:
        found = _resolve(conn, run_id)
        return (
            conn.execute(query("run_summary"), {"run_id": found}).fetchone(),
            conn.execute(query("run_events"), {"run_id": found}).fetchall(),
            conn.execute(query("run_artifacts"), {"run_id": found}).fetchall(),
        )

    summary, events, artifacts = _read(url, lock_timeout_s, read)
    out("\n".join(_summary_lines(summary)))
    out("events:" if events else "events: none")
    if events:
        out(
            "\n".join(
                f"  {at:%Y-%m-%d %H:%M:%S}  {kind:12}  {message}" for at, kind, message in events
            )
        )
    out("artifacts:" if artifacts else "artifacts: none")
    if artifacts:
        out(
            "\n".join(f"  {key}  {size} bytes  {checksum}" for key, size, checksum, *_ in artifacts)
        )
    return 0


def _summary_lines(row: Any) -> list[str]:
    (run_id, project, workflow, number, status, commit, ref, attempt, max_attempts, code,
     error, cancel_at, worker_id, created, claimed, started, finished, workspace) = row  # fmt: skip
    reason = "cancel reason" if status == "canceled" or cancel_at else "error"
    lines = [
        f"run:        {run_id}",
        f"workflow:   {project}/{workflow} #{number}",
        f"status:     {status}"
        + (" (cancel requested)" if cancel_at and status != "canceled" else ""),
        f"commit:     {commit or '-'}" + (f"  ref {ref}" if ref else ""),
        f"workspace:  {workspace or '-'}",
        f"attempt:    {attempt} of {max_attempts}" + (f" on {worker_id}" if worker_id else ""),
        f"exit code:  {'-' if code is None else code}",
        f"{reason + ':':11} {error or '-'}",
        f"created:    {_when(created)}",
        f"claimed:    {_when(claimed)}",
        f"started:    {_when(started)}",
        f"finished:   {_when(finished)}" + _took(started or claimed, finished),
    ]
    return lines


def _when(at: Any) -> str:
    return "-" if at is None else f"{at:%Y-%m-%d %H:%M:%S}"


def _took(begin: Any, end: Any) -> str:
    return "" if begin is None or end is None else f"  ({(end - begin).total_seconds():.1f} s)"


def logs(url: str | None, lock_timeout_s: float, run_id: str, follow: bool, out: Echo) -> int:
    """The run's log lines; with `follow`, keep printing new ones until the run is over, then
    exit 1 if it failed or was canceled."""
    found = _read(url, lock_timeout_s, lambda c: _resolve(c, run_id))
    after: Any = "-infinity"
    while True:
        lines, status = _read(url, lock_timeout_s, _logs_after(found, after))
        for at, level, message, stream in lines:
            marker = {"stdout": "out", "stderr": "err"}.get(stream, "---")
            out(f"{at:%H:%M:%S} {level:5} {marker:3} {message}")
            after = at
        over = status is None or status[0] in FINAL
        if not follow or (over and not lines):
            return 1 if follow and status and status[0] in ("failed", "canceled") else 0
        if not lines:
            time.sleep(0.5)


def _logs_after(run_id: str, after: Any) -> Callable[[Any], Any]:
    def read(conn: Any) -> Any:
        lines = conn.execute(query("run_log_lines_after"), {"run_id": run_id, "after": after})
        status = conn.execute(query("run_status"), {"run_id": run_id}).fetchone()
        return lines.fetchall(), status

    return read


def cancel(
    url: str | None, lock_timeout_s: float, run_id: str, reason: str | None, out: Echo
) -> int:
    def call(conn: Any) -> tuple[str, Any]:
        found = _resolve(conn, run_id)
        row = conn.execute("select ops.cancel_run(%s, %s)", (found, reason)).fetchone()
        return found, row[0]

    found, answer = _read(url, lock_timeout_s, call)
    if not answer.get("ok"):
        raise ReconcilerError(f"cannot cancel run {found}: {answer.get('error')}")
    out(f"run {found}: {answer['status'].replace('_', ' ')}")
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


def start(
    url: str | None, lock_timeout_s: float, target: str, at: dict[str, str | None], out: Echo
) -> int:
    """A manual start of PROJECT/TYPE/NAME, by the rules of ops.request_run."""
    parts = target.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ReconcilerError(f"{target!r} is not PROJECT/TYPE/NAME (e.g. acme-erp/deploy/prod)")
    project, type_, name = parts

    def work(conn: Any) -> Any:
        row = conn.execute(
            query("workflow_by_key"), {"project": project, "type": type_, "name": name}
        ).fetchone()
        if row is None:
            raise ReconcilerError(f"no workflow {target} in the database (apply it first)")
        run_id = refused_as_error(
            "start",
            lambda: conn.execute(query("request_run"), {"workflow_id": row[0], **at}).fetchone()[0],
        )
        return run_id, conn.execute(query("queued_run_summary"), {"run_id": run_id}).fetchone()

    run_id, summary = _read(url, lock_timeout_s, work)
    out(_queued_line(run_id, summary))
    return 0


def retry(url: str | None, lock_timeout_s: float, run_id: str, out: Echo) -> int:
    """A new run of the same commit, linked to the finished run it retries."""

    def work(conn: Any) -> Any:
        retried = _resolve(conn, run_id)  # a unique prefix is enough, as for show and cancel
        new_id = refused_as_error(
            "retry",
            lambda: conn.execute(query("retry_run"), {"run_id": retried}).fetchone()[0],
        )
        summary = conn.execute(query("queued_run_summary"), {"run_id": new_id}).fetchone()
        return retried, new_id, summary

    retried, new_id, summary = _read(url, lock_timeout_s, work)
    out(_queued_line(new_id, summary) + f", retry of {retried}")
    return 0


def _queued_line(run_id: Any, summary: Any) -> str:
    workflow, number, status, trigger, commit, error = summary
    line = f"run {run_id}: {workflow} #{number} {status} ({trigger}"
    line += f", commit {commit[:12]})" if commit else ")"
    return line + (f": {error}" if error else "")


def schedule(
    url: str | None, lock_timeout_s: float, project: str | None, count: int, out: Echo
) -> int:
    """The scheduled workflows, their last slot and the next ones (computed as workers do)."""
    rows = _read(
        url,
        lock_timeout_s,
        lambda c: c.execute(query("schedules"), {"project": project}).fetchall(),
    )
    now = datetime.now(UTC)
    for workflow, expression, timezone, active, last in rows:
        zone_name = timezone or "UTC"
        out(
            f"{workflow}  {expression!r} ({zone_name})"
            + ("" if active else "  (not scheduled: disabled)")
        )
        out(f"  last slot: {last:%Y-%m-%d %H:%M %Z}" if last else "  last slot: none yet")
        if active and not cron.schedule_problem(expression):
            slots = cron.next_slots(expression, timezone, now, count)
            out("  next: " + ", ".join(f"{s:%Y-%m-%d %H:%M} UTC" for s in slots))
    if not rows:
        out("no scheduled workflows")
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


def _resolve(conn: Any, run_id: str) -> str:
    """The run whose id is `run_id` or starts with it (at least 4 characters, unique)."""
    prefix = run_id.strip().lower()
    if not re.fullmatch(r"[0-9a-f-]{4,36}", prefix):
        raise ReconcilerError(
            f"{run_id!r} is not a run id: give the id or its first characters (at least 4, "
            "hexadecimal), as `reconcile runs list` shows them"
        )
    rows = conn.execute(query("run_ids_with_prefix"), {"prefix": prefix}).fetchall()
    if not rows:
        raise ReconcilerError(f"no run {run_id}")
    if len(rows) > 1:
        raise ReconcilerError(f"run id {run_id!r} is ambiguous: give more of it")
    return str(rows[0][0])
