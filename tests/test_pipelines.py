"""What the database decides of pipelines, whoever the worker: needs (order within a commit),
lanes (`concurrency`), superseding, schedules. Single-connection cases; the concurrent ones
are in test_pipeline_concurrency.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from reconciler.db import schedules
from tests.helpers import make_project, scalar, status_of

Conn = psycopg.Connection[Any]
A = "a" * 40
B = "b" * 40
C = "c" * 40


def workflow(
    conn: Conn,
    project: Any,
    kind: str,
    name: str,
    *,
    needs: list[str] | None = None,
    lane: str | None = None,
    schedule: str | None = None,
) -> Any:
    return scalar(
        conn,
        "insert into ops.workflows (project_id, workflow_type, name, needs, concurrency, "
        "schedule, triggers) values (%s, %s, %s, %s, %s, %s, %s) returning id",
        (
            project,
            kind,
            name,
            needs or [],
            lane,
            schedule,
            ["schedule"] if schedule else ["push"],
        ),
    )


def push(conn: Conn, project: Any, workflow_id: Any, commit: str) -> Any:
    return scalar(
        conn,
        "insert into ops.runs (project_id, workflow_id, metadata) "
        "values (%s, %s, jsonb_build_object('commit', %s::text, 'ref', 'main')) returning id",
        (project, workflow_id, commit),
    )


def claim(conn: Conn, worker: str = "w") -> Any:
    claimed = scalar(conn, "select ops.claim_run(%s, 30, true)", (worker,))
    return None if claimed is None else claimed["run_id"]


def finish(conn: Conn, run_id: Any, exit_code: int) -> None:
    token = scalar(conn, "select lease_token from ops.runs where id = %s", (run_id,))
    assert scalar(conn, "select ops.finish_run(%s, %s, %s)", (run_id, token, exit_code))["ok"]


def events(conn: Conn, run_id: Any) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select message from ops.run_events where run_id = %s order by created_at, id",
            (run_id,),
        )
    ]


@pytest.fixture
def pipeline(conn: Conn) -> dict[str, Any]:
    project = make_project(conn)
    return {
        "project": project,
        "build": workflow(conn, project, "build", "build"),
        "test": workflow(conn, project, "test", "test", needs=["build/build"]),
        "deploy": workflow(
            conn, project, "deploy", "deploy", needs=["test/test"], lane="production"
        ),
    }


def push_all(conn: Conn, p: dict[str, Any], commit: str) -> dict[str, Any]:
    return {name: push(conn, p["project"], p[name], commit) for name in ("build", "test", "deploy")}


def test_a_run_waits_for_its_needs_of_the_same_commit(conn: Conn, pipeline: Any) -> None:
    runs = push_all(conn, pipeline, A)
    assert "Waiting for test/test" in events(conn, runs["deploy"])[0]
    assert claim(conn) == str(runs["build"])
    assert claim(conn) is None  # test waits for build, deploy for test
    finish(conn, runs["build"], 0)
    assert claim(conn) == str(runs["test"])
    assert claim(conn) is None
    finish(conn, runs["test"], 0)
    assert claim(conn) == str(runs["deploy"])


def test_a_failed_need_cancels_the_pipeline_below_it_with_the_reason(
    conn: Conn, pipeline: Any
) -> None:
    runs = push_all(conn, pipeline, A)
    build = claim(conn)
    finish(conn, build, 1)
    assert status_of(conn, runs["test"]) == "canceled"
    assert status_of(conn, runs["deploy"]) == "canceled"
    reason = scalar(conn, "select error_message from ops.runs where id = %s", (runs["test"],))
    assert reason == "canceled: its need build/build failed (run #1)"
    reason = scalar(conn, "select error_message from ops.runs where id = %s", (runs["deploy"],))
    assert reason.startswith("canceled: its need test/test canceled")


def test_a_need_with_no_run_for_the_commit_is_met(conn: Conn, pipeline: Any) -> None:
    deploy = push(conn, pipeline["project"], pipeline["deploy"], A)  # no test run for A
    assert claim(conn) == str(deploy)


def test_a_retried_need_that_succeeds_unblocks(conn: Conn, pipeline: Any) -> None:
    build = push(conn, pipeline["project"], pipeline["build"], A)
    finish(conn, claim(conn), 1)
    retry = scalar(conn, "select ops.retry_run(%s)", (build,))
    test = push(conn, pipeline["project"], pipeline["test"], A)
    assert claim(conn) == str(retry)
    assert claim(conn) is None
    finish(conn, retry, 0)
    assert claim(conn) == str(test)


def test_a_manual_start_after_a_failed_need_is_canceled_at_once(conn: Conn, pipeline: Any) -> None:
    push(conn, pipeline["project"], pipeline["build"], A)
    finish(conn, claim(conn), 1)
    conn.execute("update ops.workflows set git_commit = %s", (A,))
    manual = scalar(conn, "select ops.request_run(%s)", (pipeline["test"],))
    assert status_of(conn, manual) == "canceled"


def test_a_lane_runs_one_at_a_time_and_supersedes_older_queued_runs(
    conn: Conn, pipeline: Any
) -> None:
    project, deploy = pipeline["project"], pipeline["deploy"]
    first = push(conn, project, deploy, A)
    assert claim(conn) == str(first)
    second = push(conn, project, deploy, B)
    assert claim(conn) is None  # the lane is busy
    third = push(conn, project, deploy, C)
    assert status_of(conn, second) == "canceled"
    reason = scalar(conn, "select error_message from ops.runs where id = %s", (second,))
    assert reason == f"superseded by commit {C[:12]} (run #3) in lane production"
    assert f"Superseded by commit {C[:12]} (run #3)" in events(conn, second)
    assert status_of(conn, first) == "running"  # a started run is not superseded
    finish(conn, first, 0)
    assert claim(conn) == str(third)


def test_a_lane_is_per_project(conn: Conn, pipeline: Any) -> None:
    other = make_project(conn, "other-erp")
    other_deploy = workflow(conn, other, "deploy", "deploy", lane="production")
    push(conn, pipeline["project"], pipeline["deploy"], A)
    push(conn, other, other_deploy, A)
    assert claim(conn) is not None
    assert claim(conn) is not None


def test_the_legacy_claim_obeys_needs_and_lanes(conn: Conn, pipeline: Any) -> None:
    runs = push_all(conn, pipeline, A)
    assert scalar(conn, "select ops.claim_next_run('old')")["run_id"] == str(runs["build"])
    assert scalar(conn, "select ops.claim_next_run('old')")["run_id"] is None


def test_members_cannot_forge_needs_or_lanes(conn: Conn, pipeline: Any) -> None:
    """A run takes needs and lane from its workflow, whatever the insert says."""
    run = scalar(
        conn,
        "insert into ops.runs (project_id, workflow_id, needs, concurrency_group) "
        "values (%s, %s, '{}', null) returning id",
        (pipeline["project"], pipeline["deploy"]),
    )
    row = conn.execute(
        "select needs, concurrency_group from ops.runs where id = %s", (run,)
    ).fetchone()
    assert row == ([pipeline["test"]], "production")


def slot_run_count(conn: Conn, workflow_id: Any) -> int:
    return int(
        scalar(
            conn,
            "select count(*) from ops.runs where workflow_id = %s and trigger_event = 'schedule'",
            (workflow_id,),
        )
    )


def test_a_schedule_enqueues_each_slot_once_and_one_catch_up_after_downtime(conn: Conn) -> None:
    project = make_project(conn)
    nightly = workflow(conn, project, "backup", "nightly", schedule="*/5 * * * *")
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=10)
    start -= timedelta(minutes=start.minute % 5)
    for minute in range(0, 30):
        now = start + timedelta(minutes=minute, seconds=7)
        schedules.tick(conn, now)
        schedules.tick(conn, now)  # a second worker at the same moment
    assert slot_run_count(conn, nightly) == 6  # :00 :05 ... :25
    later = start + timedelta(minutes=80, seconds=1)  # :30 ... :75 missed, :80 due
    assert schedules.tick(conn, later) == 1
    assert slot_run_count(conn, nightly) == 7
    catch_up = scalar(
        conn,
        "select id from ops.runs where workflow_id = %s order by run_number desc limit 1",
        (nightly,),
    )
    assert any("10 earlier slot(s) were missed" in e for e in events(conn, catch_up))


def test_a_disabled_schedule_stops(conn: Conn) -> None:
    project = make_project(conn)
    nightly = workflow(conn, project, "backup", "nightly", schedule="* * * * *")
    now = datetime.now(UTC) + timedelta(minutes=2)
    assert schedules.tick(conn, now) == 1
    conn.execute("update ops.workflows set enabled = false where id = %s", (nightly,))
    assert schedules.tick(conn, now + timedelta(minutes=5)) == 0


def test_a_need_run_again_makes_its_dependents_wait_again(conn: Conn, pipeline: Any) -> None:
    project = pipeline["project"]
    test = push(conn, project, pipeline["test"], A)  # no build run for A: its need is met
    deploy = push(conn, project, pipeline["deploy"], A)
    assert claim(conn) == str(test)
    finish(conn, test, 0)
    again = scalar(conn, "select ops.retry_run(%s)", (test,))  # deploy waits for the retry
    assert claim(conn) == str(again)
    assert claim(conn) is None
    finish(conn, again, 0)
    assert claim(conn) == str(deploy)


def test_the_reaper_settles_a_waiting_run_whose_need_ended_unseen(
    conn: Conn, pipeline: Any
) -> None:
    """A need that finished in a transaction that could not see its dependent."""
    project = pipeline["project"]
    build = push(conn, project, pipeline["build"], A)
    test = push(conn, project, pipeline["test"], A)
    conn.execute("alter table ops.runs disable trigger unblock_dependents")
    finish(conn, claim(conn), 0)
    conn.execute("alter table ops.runs enable trigger unblock_dependents")
    assert status_of(conn, build) == "succeeded"
    assert claim(conn) is None  # the flag still says waiting
    scalar(conn, "select ops.reap_expired_runs()")
    assert claim(conn) == str(test)


def expire(conn: Conn, run_id: Any) -> None:
    """The run's worker died: its lease ran out (as if no heartbeat came for a lease period)."""
    conn.execute(
        "update ops.runs set lease_expires_at = now() - interval '1 second' where id = %s",
        (run_id,),
    )


def test_a_lane_claims_by_queue_order_even_while_the_older_run_is_locked(
    conn: Conn, db_url: str, pipeline: Any
) -> None:
    """`skip locked` must not let a newer run of a lane jump an older queued one that another
    transaction holds (a claimer that has not taken the lane yet, a cancel, a console's edit):
    the newer one would start, then the older one after it."""
    project = pipeline["project"]
    hotfix = workflow(conn, project, "deploy", "hotfix", lane="production")
    older = push(conn, project, pipeline["deploy"], A)  # no run of test/test for A: claimable
    newer = push(conn, project, hotfix, B)
    with psycopg.connect(db_url) as other, other.transaction():
        other.execute("select from ops.runs where id = %s for update", (older,))
        assert claim(conn) is None  # not the newer run: the older one is first in its lane
    assert claim(conn) == str(older)
    assert claim(conn) is None
    finish(conn, older, 0)
    assert claim(conn) == str(newer)


def test_a_lane_run_requeued_after_a_newer_push_is_superseded_by_it(
    conn: Conn, pipeline: Any
) -> None:
    """A started run is not superseded; when its worker dies and the reaper puts it back in
    the queue behind a newer commit of its workflow, the newer commit is what the lane deploys."""
    project, deploy = pipeline["project"], pipeline["deploy"]
    first = push(conn, project, deploy, A)
    assert claim(conn, "dies") == str(first)
    second = push(conn, project, deploy, B)
    expire(conn, first)
    assert scalar(conn, "select ops.reap_expired_runs()") == 1
    assert status_of(conn, first) == "canceled"
    reason = scalar(conn, "select error_message from ops.runs where id = %s", (first,))
    assert reason == f"superseded by commit {B[:12]} (run #2) in lane production"
    assert events(conn, first)[-3:] == [
        "Run re-queued: its lease expired",
        "Run canceled",
        f"Superseded by commit {B[:12]} (run #2)",
    ]
    assert claim(conn) == str(second)


def test_a_requeued_lane_run_with_nothing_newer_runs_again(conn: Conn, pipeline: Any) -> None:
    project, deploy = pipeline["project"], pipeline["deploy"]
    first = push(conn, project, deploy, A)
    assert claim(conn, "dies") == str(first)
    expire(conn, first)
    assert scalar(conn, "select ops.reap_expired_runs()") == 1
    assert status_of(conn, first) == "queued"
    assert claim(conn) == str(first)
    manual = scalar(conn, "select ops.request_run(%s, null, %s)", (deploy, B))
    expire(conn, first)
    scalar(conn, "select ops.reap_expired_runs()")
    assert status_of(conn, first) == "queued"  # a manual start supersedes nothing
    assert claim(conn) == str(first)
    finish(conn, first, 0)
    assert claim(conn) == str(manual)


def test_a_worker_connected_as_service_role_claims_a_run_of_a_lane(
    conn: Conn, pipeline: Any
) -> None:
    """The claim runs as its caller; the lane check must be callable by the service role."""
    deploy = push(conn, pipeline["project"], pipeline["deploy"], A)
    conn.execute("set role service_role")
    assert claim(conn) == str(deploy)
