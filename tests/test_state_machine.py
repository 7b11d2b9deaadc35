"""The run state machine, enforced by the database for every writer (superuser included)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import make_project, make_run, make_workflow, scalar, status_of

STATES = ["queued", "claimed", "running", "succeeded", "failed", "canceled"]
ALLOWED = {
    ("queued", "claimed"),
    ("queued", "canceled"),
    ("claimed", "running"),
    ("claimed", "canceled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "canceled"),
}
# The direct path from queued to each state, through allowed transitions only.
PATH = {
    "queued": [],
    "claimed": ["claimed"],
    "running": ["claimed", "running"],
    "succeeded": ["claimed", "running", "succeeded"],
    "failed": ["claimed", "running", "failed"],
    "canceled": ["canceled"],
}


@pytest.fixture(scope="module")
def shared(module_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_db_url) as connection:
        yield connection


@pytest.fixture
def run(shared: psycopg.Connection[Any]) -> Iterator[tuple[psycopg.Connection[Any], Any]]:
    """A queued run inside a transaction that is rolled back afterwards."""
    with shared.transaction(force_rollback=True):
        project = make_project(shared, "state-machine")
        yield shared, make_run(shared, project, make_workflow(shared, project))


def move(conn: psycopg.Connection[Any], run_id: Any, status: str) -> None:
    conn.execute(
        "update ops.runs set status = %s, "
        "claimed_by = coalesce(claimed_by, 'worker-1') where id = %s",
        (status, run_id),
    )


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED))
def test_allowed_transition_works_and_writes_an_event(run: Any, old: str, new: str) -> None:
    conn, run_id = run
    for step in PATH[old]:
        move(conn, run_id, step)
    events_before = scalar(conn, "select count(*) from ops.run_events where run_id = %s", (run_id,))
    move(conn, run_id, new)
    assert status_of(conn, run_id) == new
    event = conn.execute(
        "select event_type, payload->>'previous_status', payload->>'new_status' "
        "from ops.run_events where run_id = %s order by created_at desc, id limit 1",
        (run_id,),
    ).fetchone()
    assert event == ("state_change", old, new)
    assert (
        scalar(conn, "select count(*) from ops.run_events where run_id = %s", (run_id,))
        == events_before + 1
    )


FORBIDDEN = sorted(
    (old, new)
    for old, new in itertools.product(STATES, STATES)
    if old != new and (old, new) not in ALLOWED
)


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_forbidden_transition_is_refused(run: Any, old: str, new: str) -> None:
    conn, run_id = run
    for step in PATH[old]:
        move(conn, run_id, step)
    with (
        pytest.raises(psycopg.errors.CheckViolation, match="Invalid transition"),
        conn.transaction(),
    ):
        move(conn, run_id, new)
    assert status_of(conn, run_id) == old


@pytest.mark.parametrize("final", ["succeeded", "failed", "canceled"])
def test_finished_runs_are_immutable(run: Any, final: str) -> None:
    conn, run_id = run
    for step in PATH[final]:
        move(conn, run_id, step)
    with pytest.raises(psycopg.errors.CheckViolation, match="final states"), conn.transaction():
        conn.execute("update ops.runs set metadata = '{\"x\": 1}' where id = %s", (run_id,))


@pytest.mark.parametrize("status", ["claimed", "running", "succeeded", "failed", "canceled"])
def test_a_run_cannot_be_inserted_past_queued(shared: psycopg.Connection[Any], status: str) -> None:
    with shared.transaction(force_rollback=True):
        project = make_project(shared, "insert-state")
        workflow = make_workflow(shared, project)
        refused = pytest.raises(psycopg.errors.CheckViolation, match="must be queued")
        with refused, shared.transaction():
            shared.execute(
                "insert into ops.runs (project_id, workflow_id, status, exit_code) "
                "values (%s, %s, %s, 0)",
                (project, workflow, status),
            )
        assert (
            scalar(shared, "select count(*) from ops.runs where project_id = %s", (project,)) == 0
        )


def test_a_queued_run_cannot_carry_a_result(shared: psycopg.Connection[Any]) -> None:
    with shared.transaction(force_rollback=True):
        project = make_project(shared, "insert-result")
        workflow = make_workflow(shared, project)
        with pytest.raises(psycopg.errors.CheckViolation, match="no claim, start, finish"):
            shared.execute(
                "insert into ops.runs (project_id, workflow_id, exit_code) values (%s, %s, 0)",
                (project, workflow),
            )


def test_claim_needs_a_worker(run: Any) -> None:
    conn, run_id = run
    with pytest.raises(psycopg.errors.CheckViolation, match="names its worker"):
        conn.execute("update ops.runs set status = 'claimed' where id = %s", (run_id,))


def test_transitions_stamp_their_timestamps(run: Any) -> None:
    conn, run_id = run
    for step in PATH["succeeded"]:
        move(conn, run_id, step)
    stamps = conn.execute(
        "select claimed_at is not null, started_at is not null, finished_at is not null "
        "from ops.runs where id = %s",
        (run_id,),
    ).fetchone()
    assert stamps == (True, True, True)


def test_run_events_are_append_only(run: Any) -> None:
    conn, run_id = run
    move(conn, run_id, "canceled")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("update ops.run_events set message = 'rewritten' where run_id = %s", (run_id,))


def test_a_run_of_another_projects_workflow_is_refused(shared: psycopg.Connection[Any]) -> None:
    with shared.transaction(force_rollback=True):
        mine = make_project(shared, "mine")
        theirs = make_project(shared, "theirs")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            make_run(shared, mine, make_workflow(shared, theirs))
