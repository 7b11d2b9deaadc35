"""Pipelines under concurrency, judged from run_events: real workers (threads and processes)
on a real server, kill -9, restarts, and a schedule ticked by eight processes through an
injected clock."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from reconciler.worker import Worker, WorkerOptions
from tests.helpers import make_project, scalar

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]
FINAL = ("succeeded", "failed", "canceled")


def workflow(conn: Conn, project: Any, kind: str, steps: list[str], **pipeline: Any) -> Any:
    return scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, config, needs, concurrency) "
        "values (%s, %s, %s, %s, %s, %s) returning id",
        (
            project,
            kind,
            kind,
            Jsonb({"steps": steps}),
            pipeline.get("needs", []),
            pipeline.get("lane"),
        ),
    )


def push(conn: Conn, project: Any, workflows: list[Any], commit: str) -> list[Any]:
    """What an apply does for a commit: one run per workflow, in one transaction."""
    with conn.transaction():
        return [
            scalar(
                conn,
                "insert into ops.runs (project_id, workflow_id, metadata) "
                "values (%s, %s, %s) returning id",
                (project, w, Jsonb({"commit": commit, "ref": "main"})),
            )
            for w in workflows
        ]


def wait_until(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def all_final(conn: Conn, runs: list[Any]) -> bool:
    return bool(
        scalar(
            conn,
            "select count(*) = 0 from ops.runs where id = any(%s) and status not in "
            "('succeeded', 'failed', 'canceled')",
            (runs,),
        )
    )


def moments(conn: Conn, run_id: Any) -> dict[str, Any]:
    """The first time the run reached each status, from run_events."""
    return dict(
        conn.execute(
            "select payload->>'new_status', min(created_at) from ops.run_events "
            "where run_id = %s and event_type = 'state_change' group by 1",
            (run_id,),
        ).fetchall()
    )


@pytest.fixture
def threads_of_workers(db_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(count: int) -> None:
        for i in range(count):
            worker = Worker(
                db_url,
                WorkerOptions(worker_id=f"t{i}", artifacts_dir=tmp_path, lease_s=30, poll_s=0.2),
            )
            thread = threading.Thread(target=worker.run)
            thread.start()
            started.append((worker, thread))

    yield start
    for worker, _ in started:
        worker.loop.stopping.set()
    for _, thread in started:
        thread.join(timeout=30)


def test_build_test_deploy_in_order_with_four_workers_twenty_times(
    conn: Conn, threads_of_workers: Any
) -> None:
    """20 commits through build -> test -> deploy; in half of them the test fails."""
    passing, failing = make_project(conn, "passing"), make_project(conn, "failing")
    pipelines = {}
    for project, test_step in ((passing, "true"), (failing, "exit 3")):
        build = workflow(conn, project, "build", ["sleep 0.05"])
        test = workflow(conn, project, "test", ["sleep 0.1", test_step], needs=["build"])
        deploy = workflow(conn, project, "deploy", ["true"], needs=["test/test"])
        pipelines[project] = [build, test, deploy]
    commits = []
    for i in range(20):
        project = passing if i % 2 == 0 else failing
        commit = f"{i:040x}"
        commits.append((project, push(conn, project, pipelines[project], commit)))
    threads_of_workers(4)
    every_run = [run for _, runs in commits for run in runs]
    assert wait_until(lambda: all_final(conn, every_run), 120)
    for project, (build, test, deploy) in commits:
        statuses = [
            scalar(conn, "select status from ops.runs where id = %s", (r,))
            for r in (build, test, deploy)
        ]
        deploy_at, test_at = moments(conn, deploy), moments(conn, test)
        if project == passing:
            assert statuses == ["succeeded"] * 3
            assert deploy_at["claimed"] > test_at["succeeded"]
            assert test_at["claimed"] > moments(conn, build)["succeeded"]
        else:
            assert statuses == ["succeeded", "failed", "canceled"]
            assert "claimed" not in deploy_at  # it never started
            reason = scalar(conn, "select error_message from ops.runs where id = %s", (deploy,))
            assert reason.startswith("canceled: its need test/test failed (run #")


def worker_process(db_url: str, name: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "worker",
            "--id",
            name,
            "--lease",
            "1",
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


def lane_intervals(conn: Conn, runs: list[Any]) -> list[tuple[Any, Any, Any]]:
    """(run, from, to) for every time a run was held (claimed until re-queued or finished)."""
    held = []
    for run in runs:
        start = None
        for status, at in conn.execute(
            "select payload->>'new_status', created_at from ops.run_events "
            "where run_id = %s and event_type = 'state_change' order by created_at, id",
            (run,),
        ):
            if status == "claimed":
                start = at
            elif status in ("queued", *FINAL) and start is not None:
                held.append((run, start, at))
                start = None
    return held


def test_a_production_lane_with_eight_workers_and_kill_9(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    """Three rounds of three commits pushed in quick succession; a worker holding a deploy
    is killed with SIGKILL in each round. Its run goes back to the queue behind the newer
    commits of the round: it is superseded by the newest (0020), and whatever holds its row
    lock meanwhile, no newer run of the lane is claimed before it."""
    project = make_project(conn, "prod")
    deploy = workflow(conn, project, "deploy", ["sleep 0.6"], lane="production")
    workers = [worker_process(db_url, f"p{i}", tmp_path) for i in range(8)]
    runs: list[Any] = []
    commits: dict[Any, str] = {}
    try:
        for round_ in range(3):
            for n in range(3):
                commit = f"{round_:020x}{n:020x}"
                [run] = push(conn, project, [deploy], commit)
                runs.append(run)
                commits[run] = commit
                time.sleep(0.05)
            assert wait_until(
                lambda: scalar(conn, "select count(*) from ops.runs where status = 'running'") == 1,
                30,
            )
            holder = scalar(conn, "select claimed_by from ops.runs where status = 'running'")
            victim = workers[int(holder.removeprefix("p"))]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            workers[int(holder.removeprefix("p"))] = worker_process(db_url, holder, tmp_path)
            assert wait_until(lambda: all_final(conn, runs), 60)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
    held = sorted(lane_intervals(conn, runs), key=lambda h: h[1])
    for (_, _, first_end), (_, second_start, _) in itertools.pairwise(held):
        assert first_end <= second_start  # never two runs of the lane at once
    order = [commits[run] for run, _, _ in held]
    assert order == sorted(order)  # no older commit started after a newer one
    for run in runs:
        status, error = conn.execute(
            "select status, error_message from ops.runs where id = %s", (run,)
        ).fetchone()  # type: ignore[misc]
        if status == "canceled":
            assert error.startswith("superseded by commit ")
            newer = error.split()[3]
            assert any(c.startswith(newer) and c > commits[run] for c in commits.values())
        else:
            assert status == "succeeded"  # once per commit: the kill re-queued it, not lost it
    round_ends = [runs[i + 2] for i in range(0, 9, 3)]
    assert all(
        scalar(conn, "select status from ops.runs where id = %s", (r,)) == "succeeded"
        for r in round_ends
    )  # the newest commit of each round always runs


TICKER = """
import sys
import time
from datetime import datetime, timedelta
import psycopg
from reconciler.db import schedules
url, start, first, last = sys.argv[1], datetime.fromisoformat(sys.argv[2]), *map(int, sys.argv[3:5])
with psycopg.connect(url, autocommit=True) as conn:
    for minute in range(first, last):
        schedules.tick(conn, start + timedelta(minutes=minute, seconds=1))
        time.sleep(0.05)  # the injected clock moves a minute every 50 ms
"""


def tickers(db_url: str, start: datetime, first: int, last: int) -> list[Any]:
    """Eight processes ticking the same minutes (the schedule tick of `reconcile worker`),
    each with the injected clock `start + minute`."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", TICKER, db_url, start.isoformat(), str(first), str(last)],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(8)
    ]


def test_sixty_slots_eight_tickers_restarted_midway_then_downtime(conn: Conn, db_url: str) -> None:
    project = make_project(conn, "sched")
    minutely = scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, triggers, schedule) "
        "values (%s, 'backup', 'minutely', '{schedule}', '* * * * *') returning id",
        (project,),
    )
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    first_half = tickers(db_url, start, 0, 40)
    count = "select count(*) from ops.runs where workflow_id = %s"
    assert wait_until(lambda: scalar(conn, count, (minutely,)) >= 5, 30)
    for process in first_half:  # all of them, mid-way through the slots
        process.send_signal(signal.SIGKILL)
        process.wait()
    done_before_restart = scalar(conn, count, (minutely,))
    second_half = tickers(db_url, start, 0, 60)  # restarted, from the beginning again
    for process in second_half:
        assert process.wait(timeout=60) == 0
    slots = [
        row[0]
        for row in conn.execute(
            "select (metadata->>'slot')::timestamptz from ops.runs where workflow_id = %s "
            "order by 1",
            (minutely,),
        )
    ]
    assert 5 <= done_before_restart < 40
    assert slots == [start + timedelta(minutes=m) for m in range(60)]  # each slot exactly once
    for process in tickers(db_url, start, 70, 71):  # ten minutes with no worker
        assert process.wait(timeout=60) == 0
    catch_up = conn.execute(
        "select (metadata->>'slot')::timestamptz, (metadata->>'missed_slots')::int "
        "from ops.runs where workflow_id = %s order by run_number",
        (minutely,),
    ).fetchall()
    assert len(catch_up) == 61
    assert catch_up[-1] == (start + timedelta(minutes=70), 10)
