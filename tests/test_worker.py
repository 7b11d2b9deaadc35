"""`reconcile worker` on a real server: steps in real shells, logs, artifacts, the edge cases
that must end a run with a clear error and leave the worker healthy, and cancellation."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from reconciler.worker import Worker, WorkerOptions
from tests.helpers import make_project, scalar

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]


def enqueue(conn: Conn, config: dict[str, Any], name: str = "job") -> Any:
    row = conn.execute("select id from ops.projects where slug = 'acme-erp'").fetchone()
    project = row[0] if row else make_project(conn)
    workflow = scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, config) "
        "values (%s, 'build', %s, %s) returning id",
        (project, f"{name}-{time.monotonic_ns()}", Jsonb(config)),
    )
    return scalar(
        conn,
        "insert into ops.runs (project_id, workflow_id, metadata) values (%s, %s, %s) returning id",
        (project, workflow, Jsonb({"commit": "c0ffee", "ref": "main"})),
    )


def drain(url: str, tmp_path: Path, **options: Any) -> None:
    settings = {
        "worker_id": "test-worker",
        "artifacts_dir": tmp_path / "artifacts",
        "once": True,
        "lease_s": 5,
        **options,
    }
    Worker(url, WorkerOptions(**settings)).run()


def outcome(conn: Conn, run_id: Any) -> tuple[str, int | None, str | None]:
    row = conn.execute(
        "select status, exit_code, error_message from ops.runs where id = %s", (run_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def log_lines(conn: Conn, run_id: Any) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select message from ops.run_logs where run_id = %s order by timestamp, id", (run_id,)
        )
    ]


def test_a_run_executes_its_steps_with_its_context(conn: Conn, db_url: str, tmp_path: Path) -> None:
    run = enqueue(
        conn,
        {
            "steps": [
                "echo hello",
                "echo project=$OPS_PROJECT run=$OPS_RUN_NUMBER ref=$OPS_REF",
                "mkdir -p dist && printf data > dist/app.tar.gz",
            ],
            "artifacts": ["dist/*.tar.gz"],
        },
    )
    drain(db_url, tmp_path)
    assert outcome(conn, run) == ("succeeded", 0, None)
    lines = log_lines(conn, run)
    assert "$ echo hello" in lines and "hello" in lines
    assert "project=acme-erp run=1 ref=main" in lines
    key, size, checksum, url = conn.execute(
        "select artifact_key, size_bytes, checksum, artifact_url from ops.run_artifacts "
        "where run_id = %s",
        (run,),
    ).fetchone() or ("", 0, "", "")
    assert key == "acme-erp/1/dist/app.tar.gz" and size == 4
    stored = tmp_path / "artifacts" / key
    assert stored.read_bytes() == b"data" and url == stored.resolve().as_uri()
    assert checksum == "sha256:" + hashlib.sha256(b"data").hexdigest()


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"steps": ["exit 3"]}, "step 1 `exit 3` exited with code 3"),
        (
            {"steps": ["touch x.sh && ./x.sh"]},
            "step 1 `touch x.sh && ./x.sh` exited with code 126 (not executable)",
        ),
        (
            {"steps": ["no-such-command-here"]},
            "step 1 `no-such-command-here` exited with code 127 (command not found)",
        ),
        ({"steps": ["sleep 60"], "timeout_s": 1}, "timed out after 1 s"),
        ({"steps": ["yes | head -c 100000000"]}, "output exceeded 10 MB; the step was stopped"),
        (
            {"steps": ["true"], "artifacts": ["missing/*.zip"]},
            "artifact pattern 'missing/*.zip' matched no file",
        ),
    ],
    ids=["exit-code", "not-executable", "not-found", "never-ends", "100-mb", "no-artifact"],
)
def test_a_bad_step_fails_the_run_clearly_and_the_worker_carries_on(
    conn: Conn, db_url: str, tmp_path: Path, config: dict[str, Any], error: str
) -> None:
    bad = enqueue(conn, config, "bad")
    good = enqueue(conn, {"steps": ["echo fine"]}, "good")
    started = time.monotonic()
    drain(db_url, tmp_path)
    assert time.monotonic() - started < 30
    status, _, message = outcome(conn, bad)
    assert (status, message) == ("failed", error)
    assert outcome(conn, good) == ("succeeded", 0, None)


def test_a_running_run_is_canceled_by_its_worker(conn: Conn, db_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    run = enqueue(conn, {"steps": [f"sleep 30; touch {marker}"]})
    worker = threading.Thread(target=drain, args=(db_url, tmp_path), kwargs={"lease_s": 1})
    worker.start()
    deadline = time.monotonic() + 10
    while outcome(conn, run)[0] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = time.monotonic()
    assert scalar(conn, "select ops.cancel_run(%s, 'no longer needed')", (run,))["ok"]
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert time.monotonic() - asked < 5  # within a few heartbeats (every 1/3 s here)
    assert outcome(conn, run)[0] == "canceled"
    assert not marker.exists()


def test_concurrent_runs_of_one_worker(conn: Conn, db_url: str, tmp_path: Path) -> None:
    runs = [enqueue(conn, {"steps": [f"sleep 1; echo run {i}"]}, f"c{i}") for i in range(4)]
    started = time.monotonic()
    drain(db_url, tmp_path, concurrency=4)
    assert time.monotonic() - started < 3.5  # four one-second runs side by side
    for i, run in enumerate(runs):
        assert outcome(conn, run) == ("succeeded", 0, None)
        assert f"run {i}" in log_lines(conn, run)
