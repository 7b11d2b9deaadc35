"""Leases (seed review defect 8): claims expire unless heartbeated; every write of a worker
names its lease token and is refused once the lease is lost; lost runs go back to the queue, or
fail after max_attempts, with the reason; cancellation; NOTIFY on queued runs."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.helpers import make_project, make_run, make_workflow, scalar, status_of

Conn = psycopg.Connection[Any]


def call(conn: Conn, function: str, *args: Any) -> Any:
    placeholders = ", ".join(["%s"] * len(args))
    return scalar(conn, f"select ops.{function}({placeholders})", args)


def expire(conn: Conn, run_id: Any) -> None:
    """The lease ran out (as if no heartbeat came for a lease period)."""
    conn.execute(
        "update ops.runs set lease_expires_at = now() - interval '1 second' where id = %s",
        (run_id,),
    )


@pytest.fixture
def queued(conn: Conn) -> Any:
    project = make_project(conn)
    return make_run(conn, project, make_workflow(conn, project))


def test_claim_takes_a_lease_with_a_fencing_token(conn: Conn, queued: Any) -> None:
    claim = call(conn, "claim_run", "w1", 30)
    assert claim["run_id"] == str(queued) and claim["attempt"] == 1 and claim["lease_token"]
    assert call(conn, "claim_run", "w2", 30) is None
    assert call(conn, "heartbeat_run", queued, claim["lease_token"], 30) == {
        "ok": True,
        "cancel_requested": False,
    }
    wrong = "00000000-0000-4000-8000-000000000000"
    assert call(conn, "heartbeat_run", queued, wrong, 30) == {"ok": False, "error": "lease lost"}


def test_the_fenced_lifecycle_writes_its_events(conn: Conn, queued: Any) -> None:
    token = call(conn, "claim_run", "w1", 30)["lease_token"]
    assert call(conn, "start_run", queued, token) == {"ok": True}
    lines = [{"level": "info", "message": "one"}, {"level": "warn", "message": "two"}]
    assert call(conn, "append_run_logs", queued, token, psycopg.types.json.Jsonb(lines))["ok"]
    assert call(
        conn, "record_run_artifact", queued, token, "a.tgz", "file:///a", "x", 1, "sha", None
    )["ok"]
    assert call(conn, "finish_run", queued, token, 0)["status"] == "succeeded"
    assert [
        r[0]
        for r in conn.execute(
            "select message from ops.run_events where run_id = %s order by created_at", (queued,)
        )
    ] == [
        "Run claimed by worker",
        "Run started execution",
        "Artifact added: a.tgz",
        "Run completed with status: succeeded",
    ]
    assert [
        r[0]
        for r in conn.execute(
            "select message from ops.run_logs where run_id = %s order by timestamp", (queued,)
        )
    ] == ["one", "two"]


def test_a_lost_lease_refuses_every_late_write(conn: Conn, queued: Any) -> None:
    token = call(conn, "claim_run", "w1", 30)["lease_token"]
    call(conn, "start_run", queued, token)
    expire(conn, queued)
    lost = {"ok": False, "error": "lease lost"}
    assert call(conn, "heartbeat_run", queued, token, 30) == lost
    assert (
        call(
            conn, "append_run_logs", queued, token, psycopg.types.json.Jsonb([{"message": "late"}])
        )
        == lost
    )
    assert call(conn, "record_run_artifact", queued, token, "k", "u", None, 1, None, None) == lost
    assert call(conn, "finish_run", queued, token, 0) == lost
    assert status_of(conn, queued) == "running"
    assert scalar(conn, "select count(*) from ops.run_logs where run_id = %s", (queued,)) == 0


def test_an_expired_run_is_requeued_then_claimed_with_a_new_token(conn: Conn, queued: Any) -> None:
    first = call(conn, "claim_run", "w1", 30)
    call(conn, "start_run", queued, first["lease_token"])
    expire(conn, queued)
    assert call(conn, "reap_expired_runs", 100) == 1
    second = call(conn, "claim_run", "w2", 30)
    assert second["run_id"] == str(queued) and second["attempt"] == 2
    assert second["lease_token"] != first["lease_token"]
    assert call(conn, "finish_run", queued, first["lease_token"], 0)["ok"] is False
    assert (
        scalar(
            conn,
            "select count(*) from ops.run_events where run_id = %s "
            "and message = 'Run re-queued: its lease expired'",
            (queued,),
        )
        == 1
    )


def test_after_max_attempts_the_run_fails_with_the_reason(conn: Conn, queued: Any) -> None:
    for _ in range(3):
        call(conn, "claim_run", "w-dies", 30, True)  # claimed and running at once
        expire(conn, queued)
        call(conn, "reap_expired_runs", 100)
    assert conn.execute(
        "select status, attempt, error_message from ops.runs where id = %s", (queued,)
    ).fetchone() == (
        "failed",
        3,
        "lease expired: worker w-dies stopped heartbeating (attempt 3 of 3)",
    )


def test_a_run_goes_back_to_the_queue_only_when_its_lease_expired(conn: Conn, queued: Any) -> None:
    call(conn, "claim_run", "w1", 30)
    with pytest.raises(psycopg.errors.CheckViolation, match="only once its lease expired"):
        conn.execute("update ops.runs set status = 'queued' where id = %s", (queued,))


def test_cancel_a_queued_run_at_once(conn: Conn, queued: Any) -> None:
    assert call(conn, "cancel_run", queued, "not needed") == {"ok": True, "status": "canceled"}
    assert status_of(conn, queued) == "canceled"
    assert call(conn, "cancel_run", queued, None) == {
        "ok": False,
        "error": "the run is already canceled",
    }


def test_cancel_a_running_run_through_its_worker(conn: Conn, queued: Any) -> None:
    token = call(conn, "claim_run", "w1", 30)["lease_token"]
    call(conn, "start_run", queued, token)
    assert call(conn, "cancel_run", queued, "stop it")["status"] == "cancel_requested"
    assert call(conn, "heartbeat_run", queued, token, 30)["cancel_requested"] is True
    assert call(conn, "finish_run", queued, token, 143, "killed")["status"] == "canceled"


def test_queued_runs_wake_listeners(conn: Conn, db_url: str) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen ops_runs")
        make_run(conn, project, workflow)
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notices] == ["ops_runs"]


def test_sixteen_workers_a_thousand_runs_each_once(conn: Conn, db_url: str) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    conn.execute(
        "insert into ops.runs (project_id, workflow_id) "
        "select %s, %s from generate_series(1, 1000)",
        (project, workflow),
    )
    barrier = threading.Barrier(16)

    def worker(name: str) -> int:
        done = 0
        with psycopg.connect(db_url, autocommit=True) as session:
            barrier.wait()
            while (claim := call(session, "claim_run", name, 30)) is not None:
                call(session, "start_run", claim["run_id"], claim["lease_token"])
                assert call(session, "finish_run", claim["run_id"], claim["lease_token"], 0)["ok"]
                done += 1
        return done

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(worker, [f"w{i}" for i in range(16)])) == 1000
    per_run = conn.execute(
        "select count(*) filter (where payload->>'new_status' = 'claimed'), "
        "count(*) filter (where payload->>'new_status' = 'succeeded') "
        "from ops.run_events group by run_id"
    ).fetchall()
    assert len(per_run) == 1000 and set(per_run) == {(1, 1)}
