"""Workers that die, a database that restarts, sixteen workers at once: no run lost, none run
twice at the same time, none completed twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from reconciler.db import migrations
from reconciler.db.embedded import EmbeddedPostgres, Layout, ServerUser, package_version
from reconciler.worker import Worker, WorkerOptions
from tests.helpers import make_project, scalar

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]
LEASE_S = 1


def workflow_with(conn: Conn, steps: list[str]) -> tuple[Any, Any]:
    row = conn.execute("select id from ops.projects limit 1").fetchone()
    project = row[0] if row else make_project(conn)
    workflow = scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, config) "
        "values (%s, 'test', %s, %s) returning id",
        (project, f"w{time.monotonic_ns()}", Jsonb({"steps": steps})),
    )
    return project, workflow


def enqueue(conn: Conn, steps: list[str], count: int = 1) -> list[Any]:
    project, workflow = workflow_with(conn, steps)
    return [
        r[0]
        for r in conn.execute(
            "insert into ops.runs (project_id, workflow_id) select %s, %s "
            "from generate_series(1, %s) returning id",
            (project, workflow, count),
        )
    ]


def status(conn: Conn, run_id: Any) -> str:
    return str(scalar(conn, "select status from ops.runs where id = %s", (run_id,)))


def wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def never_two_at_once(conn: Conn, run_id: Any) -> None:
    """From run_events: each claim is followed by the run's end or its re-queue before the
    next claim, so no two workers ever held it together."""
    moves = [
        r[0]
        for r in conn.execute(
            "select payload->>'new_status' from ops.run_events where run_id = %s "
            "and event_type = 'state_change' order by created_at, id",
            (run_id,),
        )
    ]
    holding = False
    for move in moves:
        if move == "claimed":
            assert not holding, moves
            holding = True
        elif move in ("queued", "succeeded", "failed", "canceled"):
            holding = False


def step_processes(marker: str) -> list[int]:
    """The host's processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_kill_9_a_worker_mid_run(conn: Conn, db_url: str, tmp_path: Path) -> None:
    """20 trials: the run is re-queued within two lease periods, the killed worker's late
    write is refused, the run is never held by two workers at once, and no process of the
    step (background, double-forked or setsid'd) outlives the worker."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for trial in range(20):
        marker = f"{7000 + trial}.{os.getpid()}"  # a sleep no other process runs
        [run] = enqueue(
            conn,
            [
                f"setsid sh -c 'sleep {marker}1' & (sleep {marker}2 &); "
                f"sh -c 'trap : TERM HUP; sleep {marker}3' & echo started; sleep {marker}4"
            ],
        )
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "worker",
                "--id",
                f"doomed-{trial}",
                "--lease",
                str(LEASE_S),
                "--poll",
                "0.2",
                "--database-url",
                db_url,
                "--artifacts-dir",
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert wait_for(lambda run=run: status(conn, run) == "running", 20)
            token = scalar(conn, "select lease_token from ops.runs where id = %s", (run,))
            assert wait_for(lambda marker=marker: len(step_processes(marker)) >= 4, 10)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        killed_at = time.monotonic()
        # the kernel ends the step's PID namespace with the worker: gone before the lease lapses
        assert wait_for(lambda marker=marker: not step_processes(marker), LEASE_S / 2), [
            (p, Path(f"/proc/{p}/cmdline").read_bytes()) for p in step_processes(marker)
        ]
        assert wait_for(
            lambda run=run: (
                (scalar(conn, "select ops.reap_expired_runs()") or 1)
                and status(conn, run) in ("queued", "failed")
            ),
            2 * LEASE_S + 1,
        )
        assert time.monotonic() - killed_at <= 2 * LEASE_S + 1
        late = scalar(
            conn,
            "select ops.append_run_logs(%s, %s, %s)",
            (run, token, Jsonb([{"message": "too late"}])),
        )
        assert late == {"ok": False, "error": "lease lost"}
        conn.execute(
            "update ops.runs set status = 'canceled' where id = %s and status = 'queued'", (run,)
        )  # out of the way of the next trial
        never_two_at_once(conn, run)
    assert scalar(conn, "select count(*) from ops.run_logs where message = 'too late'") == 0


@pytest.mark.parametrize("concurrency", [1, 8])
def test_sixteen_workers_complete_a_thousand_runs_once(
    conn: Conn, db_url: str, tmp_path: Path, concurrency: int
) -> None:
    runs = enqueue(conn, [], count=1000)  # no steps: a no-op run
    workers = [
        Worker(
            db_url,
            WorkerOptions(
                worker_id=f"w{i}",
                artifacts_dir=tmp_path,
                once=True,
                lease_s=30,
                concurrency=concurrency,
            ),
        )
        for i in range(16)
    ]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    per_run = dict(
        conn.execute(
            "select run_id, array_agg(payload->>'new_status' order by created_at, id) "
            "from ops.run_events where event_type = 'state_change' group by run_id"
        ).fetchall()
    )
    assert set(per_run) == set(runs)
    assert {tuple(v) for v in per_run.values()} == {("claimed", "running", "succeeded")}


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, so that it can be restarted."""
    folder = Path(tempfile.mkdtemp(prefix="ops-reconciler-restart-"))
    folder.chmod(0o755)
    server = EmbeddedPostgres(Layout(folder, package_version()), ServerUser.for_current_process())
    with server.session():
        yield server
    shutil.rmtree(folder, ignore_errors=True)


def test_workers_ride_out_a_database_restart(own_server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = own_server.layout.conninfo()
    with psycopg.connect(url) as conn:
        migrations.migrate(conn, lock_timeout_s=30)
        conn.commit()
        runs = enqueue(conn, ["sleep 0.3"], count=24)
        conn.commit()
    workers = [
        Worker(
            url,
            WorkerOptions(
                worker_id=f"w{i}", artifacts_dir=tmp_path, once=True, lease_s=30, poll_s=0.2
            ),
        )
        for i in range(4)
    ]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the workers are busy
    own_server.stop()
    time.sleep(1.0)
    own_server._start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    with psycopg.connect(url) as conn:
        statuses = dict(conn.execute("select id, status from ops.runs").fetchall())
        assert set(statuses) == set(runs)
        assert set(statuses.values()) == {"succeeded"}
        for run in runs:
            never_two_at_once(conn, run)
