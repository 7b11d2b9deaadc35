"""`reconcile worker` and `reconcile runs list | show | logs | cancel | cleanup`."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from reconciler import checkout
from reconciler.db import migrations
from reconciler.db.connection import bound_waits, connect, user_errors
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
