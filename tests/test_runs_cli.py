"""`reconcile runs ...` and `reconcile worker` in a subprocess, against the real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.cli import reconcile
from tests.helpers import make_project, scalar

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]


def enqueue(conn: Conn, config: dict[str, Any]) -> str:
    row = conn.execute("select id from ops.projects limit 1").fetchone()
    project = row[0] if row else make_project(conn)
    workflow = scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, config) "
        "values (%s, 'build', %s, %s) returning id",
        (project, f"job-{time.monotonic_ns()}", Jsonb(config)),
    )
    return str(
        scalar(
            conn,
            "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
            (project, workflow),
        )
    )


def test_worker_then_list_show_logs(conn: Conn, db_url: str, tmp_path: Path) -> None:
    run = enqueue(conn, {"steps": ["echo first line", "echo second line"]})
    queued = json.loads(reconcile("runs", "list", "-o", "json", "--database-url", db_url).stdout)
    assert [(r["id"], r["status"]) for r in queued] == [(run, "queued")]
    worked = reconcile(
        "worker", "--once", "--database-url", db_url, "--artifacts-dir", str(tmp_path)
    )
    assert worked.code == 0, worked.stderr
    listed = reconcile("runs", "list", "--status", "succeeded", "--database-url", db_url)
    assert run in listed.stdout and "succeeded" in listed.stdout
    shown = reconcile("runs", "show", run, "--database-url", db_url)
    assert "Run claimed by worker" in shown.stdout and "artifacts: none" in shown.stdout
    logs = reconcile("runs", "logs", run, "--follow", "--database-url", db_url)
    assert [line.split(maxsplit=3)[2:] for line in logs.stdout.splitlines()] == [
        ["---", "$ echo first line"],
        ["out", "first line"],
        ["---", "$ echo second line"],
        ["out", "second line"],
    ]
    assert logs.code == 0


def test_show_says_what_an_operator_needs_and_ids_may_be_shortened(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    run = enqueue(conn, {"steps": ["echo to stderr >&2; exit 4"]})
    conn.execute(
        "update ops.runs set metadata = %s where id = %s",
        (Jsonb({"commit": "ab" * 20, "ref": "main"}), run),
    )
    conn.commit()
    worked = reconcile(
        "worker", "--once", "--id", "w-1", "--database-url", db_url, "--artifacts-dir",
        str(tmp_path),
    )  # fmt: skip
    assert f"run {run} acme-erp/build/" in worked.stdout and ": taken" in worked.stdout
    assert "finished exit 4: step 1 `echo to stderr >&2; exit 4` exited with code 4" in (
        worked.stdout
    )
    shown = reconcile("runs", "show", run[:8], "--database-url", db_url)
    assert shown.code == 0, shown.stderr
    fields = dict(
        line.split(":", 1) for line in shown.stdout.splitlines() if not line.startswith(" ")
    )
    assert fields["run"].strip() == run
    assert fields["status"].strip() == "failed"
    assert fields["commit"].strip() == f"{'ab' * 20}  ref main"
    assert fields["attempt"].strip() == "1 of 3 on w-1"
    assert fields["exit code"].strip() == "4"
    assert fields["error"].strip() == "step 1 `echo to stderr >&2; exit 4` exited with code 4"
    assert fields["finished"].strip().endswith(" s)")
    followed = reconcile("runs", "logs", run[:6], "--follow", "--database-url", db_url)
    assert followed.code == 1  # the run failed
    assert [line.split(maxsplit=3)[2:] for line in followed.stdout.splitlines()][1] == [
        "err",
        "to stderr",
    ]
    workflow = scalar(conn, "select workflow_id from ops.runs where id = %s", (run,))
    for twin in ("abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002"):
        conn.execute(
            "insert into ops.runs (id, project_id, workflow_id) "
            "select %s, project_id, id from ops.workflows where id = %s",
            (twin, workflow),
        )
    conn.commit()
    ambiguous = reconcile("runs", "show", "abcd0000", "--database-url", db_url)
    assert (ambiguous.code, ambiguous.stderr) == (
        1,
        "error: run id 'abcd0000' is ambiguous: give more of it\n",
    )
    one = reconcile(
        "runs", "show", "abcd0000-0000-4000-8000-000000000002", "--database-url", db_url
    )
    assert one.code == 0 and "status:     queued" in one.stdout


def test_cancel_a_queued_run_and_refuse_a_finished_one(conn: Conn, db_url: str) -> None:
    run = enqueue(conn, {"steps": ["true"]})
    canceled = reconcile("runs", "cancel", run, "--reason", "not needed", "--database-url", db_url)
    assert canceled.code == 0 and canceled.stdout.strip() == f"run {run}: canceled"
    again = reconcile("runs", "cancel", run, "--database-url", db_url)
    assert again.code == 1
    assert again.stderr.strip() == f"error: cannot cancel run {run}: the run is already canceled"


def test_bad_run_ids_are_one_line(db_url: str) -> None:
    for command in (["runs", "show", "nope"], ["runs", "logs", "nope"], ["runs", "cancel", "x"]):
        result = reconcile(*command, "--database-url", db_url)
        assert result.code == 1 and "is not a run id" in result.stderr


def test_cleanup_removes_expired_artifacts_and_old_logs(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    run = enqueue(conn, {"steps": ["echo old"]})
    stored = tmp_path / "expired.bin"
    stored.write_bytes(b"x")
    conn.execute("update ops.runs set status = 'canceled' where id = %s", (run,))
    conn.execute(
        "insert into ops.run_artifacts (run_id, artifact_key, artifact_url, expires_at) "
        "values (%s, 'k', %s, now() - interval '1 day')",
        (run, stored.as_uri()),
    )
    conn.execute(
        "insert into ops.run_logs (run_id, log_level, message, timestamp) "
        "values (%s, 'info', 'ancient', now() - interval '90 days')",
        (run,),
    )
    result = reconcile("runs", "cleanup", "--database-url", db_url)
    assert result.stdout.strip() == (
        "deleted 1 expired artifact(s) and 1 log line(s) older than 30 day(s)"
    )
    assert not stored.exists()


def test_a_steps_terminal_controls_are_shown_never_obeyed(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    """A step's output is hostile: printed raw, `\\e[2J`, `\\r`, an OSC title or clipboard
    write, or a right-to-left override would act on the operator's terminal."""
    hostile = "a\\033[2Jb\\033]52;c;ZXZpbA==\\007c\\rd\\342\\200\\256e"
    run = enqueue(conn, {"steps": [f"printf '{hostile}\\n'"]})
    done = reconcile("worker", "--once", "--database-url", db_url, "--artifacts-dir", str(tmp_path))
    assert done.code == 0, done.stderr
    for shown in (
        reconcile("runs", "logs", run, "--database-url", db_url).stdout,
        done.stdout + done.stderr,
    ):
        assert not any(c in shown for c in "\x1b\x07\r\u202e"), repr(shown)
    logs = reconcile("runs", "logs", run, "--database-url", db_url).stdout
    assert "a\\x1b[2Jb\\x1b]52;c;ZXZpbA==\\x07c\\rd\\u202ee" in logs, repr(logs)


def test_sigterm_finishes_the_run_in_flight_and_says_so(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    run = enqueue(conn, {"steps": ["sleep 2; echo done"]})
    conn.commit()
    worker = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "worker", "--database-url", db_url, "--poll", "0.2",
         "--artifacts-dir", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert worker.stdout is not None
    lines = [worker.stdout.readline(), worker.stdout.readline()]
    assert lines[1].startswith(f"run {run} ") and lines[1].rstrip().endswith(": taken")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0
    said = out.splitlines()
    assert said[0].endswith("SIGTERM, finishing the runs in flight")
    assert said[1].startswith(f"run {run} ") and said[1].endswith("finished exit 0")
    assert scalar(conn, "select status from ops.runs where id = %s", (run,)) == "succeeded"
