"""`reconcile runs ...` and `reconcile worker` in a subprocess, against the real server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
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
    assert [line.split(" ", 2)[2].strip() for line in logs.stdout.splitlines()] == [
        "$ echo first line",
        "first line",
        "$ echo second line",
        "second line",
    ]


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


def test_a_step_finds_no_password_of_the_worker_to_store(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    """A step runs as the worker's user: what it digs out of the worker (/proc/$PPID/environ,
    its command line) must never reach the logs, whoever reads them."""
    secret = "Sup3rSecretPw"
    params = conninfo_to_dict(db_url)
    params["password"] = secret
    url = make_conninfo(**params)
    run = enqueue(
        conn,
        {
            "steps": [
                "echo env: $DATABASE_URL $PGPASSWORD",
                "tr '\\000' '\\n' < /proc/$PPID/environ | grep -a DATABASE_URL || true",
                f"echo {secret}",
            ]
        },
    )
    done = reconcile(
        "worker", "--once", "--artifacts-dir", str(tmp_path), env={"DATABASE_URL": url}
    )
    assert done.code == 0, done.stderr
    logs = [
        m for (m,) in conn.execute("select message from ops.run_logs where run_id = %s", (run,))
    ]
    assert "env:" in "\n".join(logs)
    assert not any(secret in m for m in logs), logs
    assert secret not in done.stdout + done.stderr
