"""The queue in batches (0021): ops.claim_runs claims and starts many runs in one statement,
ops.finish_runs finishes many, and the state-change events of every move are still written
(by a statement-level trigger), in order, with needs, lanes and leases in force."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import make_project, make_run, make_workflow, scalar, status_of
from tests.test_pipelines import events, push, workflow

Conn = psycopg.Connection[Any]
A = "a" * 40


def claim_runs(conn: Conn, want: int, worker: str = "w1") -> list[dict[str, Any]]:
    return list(scalar(conn, "select ops.claim_runs(%s, 30, %s)", (worker, want)))


def finish_runs(conn: Conn, finished: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(scalar(conn, "select ops.finish_runs(%s)", (Jsonb(finished),)))


def done(claim: dict[str, Any], exit_code: int = 0) -> dict[str, Any]:
    return {"run_id": claim["run_id"], "lease_token": claim["lease_token"], "exit_code": exit_code}


def state_changes(conn: Conn, run_id: Any) -> list[tuple[str, str]]:
    return [
        (row[0], row[1])
        for row in conn.execute(
            "select payload->>'previous_status', payload->>'new_status' from ops.run_events "
            "where run_id = %s and event_type = 'state_change' order by created_at, id",
            (run_id,),
        )
    ]


@pytest.fixture
def five(conn: Conn) -> list[Any]:
    project = make_project(conn)
    workflow_id = make_workflow(conn, project)
    return [make_run(conn, project, workflow_id) for _ in range(5)]


def test_a_batch_is_claimed_started_and_finished_with_every_event(
    conn: Conn, five: list[Any]
) -> None:
    claims = claim_runs(conn, 3)
    assert [c["run_id"] for c in claims] == [str(r) for r in five[:3]]  # claim order
    assert all(c["attempt"] == 1 and c["lease_token"] and c["project"] for c in claims)
    assert [status_of(conn, r) for r in five] == ["running"] * 3 + ["queued"] * 2
    answers = finish_runs(conn, [done(claims[0]), done(claims[1], 2)])
    assert answers == [{"ok": True, "status": "succeeded"}, {"ok": True, "status": "failed"}]
    assert state_changes(conn, five[0]) == [
        ("queued", "claimed"),
        ("claimed", "running"),
        ("running", "succeeded"),
    ]
    assert state_changes(conn, five[1])[-1] == ("running", "failed")
    assert state_changes(conn, five[3]) == []
    worker = scalar(
        conn,
        "select payload->>'worker_id' from ops.run_events where run_id = %s "
        "and payload->>'new_status' = 'claimed'",
        (five[0],),
    )
    assert worker == "w1"


def test_a_finish_is_fenced_by_its_lease_token(conn: Conn, five: list[Any]) -> None:
    first, second = claim_runs(conn, 2)
    wrong = {**done(first), "lease_token": "00000000-0000-4000-8000-000000000000"}
    answers = finish_runs(conn, [wrong, done(second)])
    assert answers == [{"ok": False, "error": "lease lost"}, {"ok": True, "status": "succeeded"}]
    assert status_of(conn, five[0]) == "running"
    conn.execute(
        "update ops.runs set lease_expires_at = now() - interval '1 second' where id = %s",
        (five[0],),
    )
    assert finish_runs(conn, [done(first)]) == [{"ok": False, "error": "lease lost"}]


def test_a_cancel_requested_while_running_finishes_as_canceled(conn: Conn, five: list[Any]) -> None:
    (claim,) = claim_runs(conn, 1)
    assert scalar(conn, "select ops.cancel_run(%s)", (five[0],))["status"] == "cancel_requested"
    assert finish_runs(conn, [done(claim)]) == [{"ok": True, "status": "canceled"}]


def test_claim_and_start_in_one_move_needs_a_fresh_lease(conn: Conn, five: list[Any]) -> None:
    """queued -> running only as a claim: a worker, a new lease token that holds, one more
    attempt; anything less is refused like any other illegal transition."""
    for sets in (
        "claimed_by = 'w'",  # no lease
        "claimed_by = 'w', lease_token = gen_random_uuid(), attempt = attempt + 1, "
        "lease_expires_at = now() - interval '1 second'",  # a lease already over
        "claimed_by = 'w', lease_token = gen_random_uuid(), "
        "lease_expires_at = now() + interval '30 seconds'",  # the attempt not counted
        "lease_token = gen_random_uuid(), attempt = attempt + 1, "
        "lease_expires_at = now() + interval '30 seconds'",  # no worker
    ):
        with (
            pytest.raises(psycopg.errors.CheckViolation, match="Invalid transition"),
            conn.transaction(),
        ):
            conn.execute(
                f"update ops.runs set status = 'running', {sets} where id = %s", (five[0],)
            )
    assert status_of(conn, five[0]) == "queued"
    assert state_changes(conn, five[0]) == []


def test_a_run_id_cannot_change(conn: Conn, five: list[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="id cannot change"):
        conn.execute("update ops.runs set id = gen_random_uuid() where id = %s", (five[0],))


def test_a_batch_takes_one_run_per_lane_and_no_waiting_run(conn: Conn) -> None:
    project = make_project(conn)
    build = workflow(conn, project, "build", "build")
    test = workflow(conn, project, "test", "test", needs=["build/build"])
    deploy = workflow(conn, project, "deploy", "deploy", lane="production")
    other = workflow(conn, project, "deploy", "other", lane="production")
    runs = {
        "build": push(conn, project, build, A),
        "test": push(conn, project, test, A),
        "deploy": push(conn, project, deploy, A),
        "other": push(conn, project, other, A),
    }
    claimed = {c["run_id"] for c in claim_runs(conn, 10)}
    assert claimed == {str(runs["build"]), str(runs["deploy"])}  # test waits, other's lane busy
    assert claim_runs(conn, 10) == []
    assert "Waiting for build/build" in " ".join(events(conn, runs["test"]))


def test_concurrent_batches_never_claim_a_run_twice(db_url: str, conn: Conn) -> None:
    project = make_project(conn)
    workflow_id = make_workflow(conn, project)
    conn.execute(
        "insert into ops.runs (project_id, workflow_id) select %s, %s from generate_series(1, 300)",
        (project, workflow_id),
    )
    start = threading.Barrier(4)

    def drain(name: str) -> list[str]:
        taken: list[str] = []
        with psycopg.connect(db_url, autocommit=True) as session:
            start.wait()
            finished: list[dict[str, Any]] = []
            while True:
                answer = scalar(
                    session,
                    "select ops.finish_and_claim_runs(%s, %s, 30, 16)",
                    (Jsonb(finished), name),
                )
                assert all(f["ok"] for f in answer["finished"])
                if not answer["next"]:
                    return taken
                taken += [c["run_id"] for c in answer["next"]]
                finished = [done(c) for c in answer["next"]]

    with ThreadPoolExecutor(4) as pool:
        taken = [run for batch in pool.map(drain, ["a", "b", "c", "d"]) for run in batch]
    assert len(taken) == len(set(taken)) == 300
    assert scalar(conn, "select count(*) from ops.runs where status <> 'succeeded'") == 0
    assert (
        scalar(conn, "select count(*) from ops.run_events where event_type = 'state_change'") == 900
    )


def test_a_newer_run_of_a_lane_waits_while_an_older_one_is_locked(db_url: str, conn: Conn) -> None:
    """0020's rule in the batch: a lane's run only as the lane's head, locked rows included
    (an older commit held by the reaper or another claimer must not be overtaken)."""
    project = make_project(conn)
    first = workflow(conn, project, "deploy", "deploy", lane="production")
    second = workflow(conn, project, "deploy", "other", lane="production")
    older, newer = push(conn, project, first, A), push(conn, project, second, A)
    with psycopg.connect(db_url) as other:
        other.execute("select 1 from ops.runs where id = %s for update", (older,))
        assert claim_runs(conn, 10) == []
        other.rollback()
    assert [c["run_id"] for c in claim_runs(conn, 10)] == [str(older)]
    assert status_of(conn, newer) == "queued"


def test_a_worker_connected_as_service_role_claims_and_finishes_a_batch(conn: Conn) -> None:
    """claim_runs and finish_runs run as their caller: the service role may do it all, lane
    check and event trigger included."""
    project = make_project(conn)
    plain = make_run(conn, project, make_workflow(conn, project))
    lane = push(conn, project, workflow(conn, project, "deploy", "deploy", lane="production"), A)
    conn.execute("set role service_role")
    claims = claim_runs(conn, 10)
    assert {c["run_id"] for c in claims} == {str(plain), str(lane)}
    assert finish_runs(conn, [done(c) for c in claims]) == [{"ok": True, "status": "succeeded"}] * 2
    conn.execute("reset role")
    assert len(state_changes(conn, lane)) == 3
