"""The queue's cost per run (0023): indexes that served no query are gone, the rare final
states keep a partial one; what a user reads is unchanged and still read through an index."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from reconciler.db.queries import query
from tests.helpers import make_project, make_workflow, scalar

Conn = psycopg.Connection[Any]
STATES = ["queued", "running", "succeeded", "failed", "canceled"]


def queue(conn: Conn, count: int, workflow: str = "build-main") -> tuple[Any, Any]:
    project = make_project(conn, f"cost-{workflow}")
    workflow_id = make_workflow(conn, project, workflow)
    conn.execute(
        "insert into ops.runs (project_id, workflow_id) select %s, %s from generate_series(1, %s)",
        (project, workflow_id, count),
    )
    return project, workflow_id


def drain(conn: Conn, count: int, exit_code: int = 0) -> list[Any]:
    """Claim and finish `count` runs through the queue's functions; their ids."""
    ids: list[Any] = []
    while len(ids) < count:
        claims = scalar(conn, "select ops.claim_runs('w1', 30, %s)", (min(500, count - len(ids)),))
        finished = [
            {"run_id": c["run_id"], "lease_token": c["lease_token"], "exit_code": exit_code}
            for c in claims
        ]
        scalar(conn, "select ops.finish_runs(%s)", (Jsonb(finished),))
        ids += [c["run_id"] for c in claims]
    return ids


def runs_list(conn: Conn, status: str | None, project: str | None = None) -> list[str]:
    rows = conn.execute(
        query("runs_list"), {"project": project, "status": status, "limit": 1000}
    ).fetchall()
    return sorted(str(row[0]) for row in rows)


@pytest.fixture
def mixed(conn: Conn) -> dict[str, list[str]]:
    """Runs in each state a listing can ask for: two of each."""
    queue(conn, 10)
    by_status = {
        "succeeded": drain(conn, 2),
        "failed": drain(conn, 2, exit_code=1),
        "running": [c["run_id"] for c in scalar(conn, "select ops.claim_runs('w2', 30, 2)")],
    }
    canceled = conn.execute(
        "select id from ops.runs where status = 'queued' order by created_at, id limit 2"
    ).fetchall()
    for (run_id,) in canceled:
        conn.execute("update ops.runs set status = 'canceled' where id = %s", (run_id,))
    by_status["canceled"] = [str(run_id) for (run_id,) in canceled]
    by_status["queued"] = [
        str(row[0]) for row in conn.execute("select id from ops.runs where status = 'queued'")
    ]
    return {status: sorted(str(i) for i in ids) for status, ids in by_status.items()}


@pytest.mark.parametrize("status", STATES)
def test_runs_list_by_status_gives_exactly_the_runs_in_it(
    conn: Conn, mixed: dict[str, list[str]], status: str
) -> None:
    assert len(mixed[status]) == 2
    assert runs_list(conn, status) == mixed[status]
    assert runs_list(conn, status, "cost-build-main") == mixed[status]


def test_every_run_is_listed_without_a_filter(conn: Conn, mixed: dict[str, list[str]]) -> None:
    assert runs_list(conn, None) == sorted(i for ids in mixed.values() for i in ids)


def test_the_indexes_that_served_no_query_are_gone(conn: Conn) -> None:
    names = {
        row[0]
        for row in conn.execute(
            "select indexname from pg_indexes where schemaname = 'ops' "
            "and tablename in ('runs', 'run_events')"
        )
    }
    gone = {
        "idx_ops_runs_workflow_id",
        "idx_ops_runs_status",
        "idx_ops_runs_queued",
        "idx_ops_runs_claimed_by",
        "idx_ops_run_events_type",
    }
    assert not names & gone
    assert {"idx_ops_runs_claimable", "idx_ops_runs_unsuccessful"} <= names


def test_a_big_table_still_lists_failures_and_claims_through_an_index(conn: Conn) -> None:
    """3,000 finished runs, a few failed, 500 queued: `runs list --status failed` and the claim's
    scan read an index, not the whole table."""
    queue(conn, 3_500)
    drain(conn, 3_000)
    drain(conn, 3, exit_code=1)
    conn.execute("analyze ops.runs")
    plan = "\n".join(
        row[0]
        for row in conn.execute(
            b"explain " + query("runs_list"), {"project": None, "status": "failed", "limit": 20}
        )
    )
    assert "idx_ops_runs_unsuccessful" in plan
    claim_scan = "\n".join(
        row[0]
        for row in conn.execute(
            "explain select id from ops.runs where status = 'queued' and not blocked "
            "order by created_at, id limit 64"
        )
    )
    assert "idx_ops_runs_claimable" in claim_scan
    assert len(drain(conn, 497)) == 497  # the rest of the queue, in claim order, still claimed


def test_the_claim_functions_never_jit(conn: Conn) -> None:
    """LLVM compiled the claim's plan on every call once a big queue costed it above
    jit_above_cost (~25 ms a batch); the functions turn it off for themselves only."""
    settings = {
        row[0]: row[1]
        for row in conn.execute(
            "select p.proname, p.proconfig from pg_proc p "
            "where p.pronamespace = 'ops'::regnamespace and p.proname in "
            "('claim_runs', 'finish_runs')"
        )
    }
    assert settings == {
        "claim_runs": ['search_path=""', "jit=off"],
        "finish_runs": ['search_path=""', "jit=off"],
    }


def payloads(conn: Conn, run_id: Any) -> list[dict[str, Any]]:
    return [
        row[0]
        for row in conn.execute(
            "select payload from ops.run_events where run_id = %s "
            "and event_type = 'state_change' order by created_at, id",
            (run_id,),
        )
    ]


def test_every_moves_event_says_who_what_and_how_it_ended(conn: Conn) -> None:
    """The payload of each kind of move, exactly: no key with a null value, the worker's id
    from the claim on, the exit code and error once finished."""
    queue(conn, 4)
    ok, failed = scalar(conn, "select ops.claim_runs('w1', 30, 2)")
    scalar(
        conn,
        "select ops.finish_runs(%s)",
        (
            Jsonb(
                [
                    {"run_id": ok["run_id"], "lease_token": ok["lease_token"], "exit_code": 0},
                    {
                        "run_id": failed["run_id"],
                        "lease_token": failed["lease_token"],
                        "exit_code": 3,
                        "error": "step 1 exited 3",
                    },
                ]
            ),
        ),
    )
    canceled = scalar(conn, "select id from ops.runs where status = 'queued' limit 1")
    conn.execute("update ops.runs set status = 'canceled' where id = %s", (canceled,))
    claim = {"previous_status": "queued", "new_status": "claimed", "worker_id": "w1", "attempt": 1}
    start = {**claim, "previous_status": "claimed", "new_status": "running"}
    assert payloads(conn, ok["run_id"]) == [
        claim,
        start,
        {**start, "previous_status": "running", "new_status": "succeeded", "exit_code": 0},
    ]
    assert payloads(conn, failed["run_id"])[-1] == {
        **start,
        "previous_status": "running",
        "new_status": "failed",
        "exit_code": 3,
        "error_message": "step 1 exited 3",
    }
    assert payloads(conn, canceled) == [
        {"previous_status": "queued", "new_status": "canceled", "attempt": 0}
    ]
