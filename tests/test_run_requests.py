"""Manual starts, retries and cancels as the real `authenticated` role (and anon, and the
service role): ops.request_run, ops.retry_run, ops.request_cancel decide by the caller's role
in the run's project. Each case runs in a transaction that is rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import make_project, make_run, make_user, make_workflow, scalar

ROLES = ["owner", "admin", "developer", "viewer"]
OPERATORS = {"owner", "admin", "developer"}
PERSONAS = [*ROLES, "non-member", "anonymous"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def world(module_db_url: str) -> Iterator[tuple[psycopg.Connection[Any], dict[str, Any]]]:
    with psycopg.connect(module_db_url) as conn:
        users = {p: make_user(conn, f"{p}@example.com") for p in [*ROLES, "non-member"]}
        project = make_project(conn, "project-p")
        other = make_project(conn, "project-q")
        for role in ROLES:
            conn.execute(
                "insert into ops.project_memberships (project_id, user_id, role) "
                "values (%s, %s, %s)",
                (project, users[role], role),
            )
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role) "
            "values (%s, %s, 'owner')",
            (other, users["non-member"]),
        )
        workflow = make_workflow(conn, project, "deploy-prod")
        conn.execute(
            "update ops.workflows set git_ref = 'main', git_commit = %s where id = %s",
            (COMMIT, workflow),
        )
        finished = make_run(conn, project, workflow)
        conn.execute(
            "update ops.runs set git_commit = %s, git_ref = 'main' where id = %s",
            (COMMIT, finished),
        )
        conn.execute("update ops.runs set status = 'canceled' where id = %s", (finished,))
        queued = make_run(conn, project, workflow)
        conn.commit()
        yield conn, {"users": users, "workflow": workflow, "finished": finished, "queued": queued}


def act_as(conn: psycopg.Connection[Any], users: dict[str, Any], persona: str) -> None:
    """Become the persona the way PostgREST does: a role, and the JWT's sub claim."""
    if persona == "anonymous":
        conn.execute("set local role anon")
        return
    conn.execute("set local role authenticated")
    conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(users[persona]),))


CALLS = {
    "request_run": "select ops.request_run(%(workflow)s)",
    "request_run_ref": "select ops.request_run(%(workflow)s, 'release/1.2', 'abcdef1')",
    "retry_run": "select ops.retry_run(%(finished)s)",
    "request_cancel": "select ops.request_cancel(%(queued)s, 'wrong build')",
}


def call_as(conn: psycopg.Connection[Any], world: dict[str, Any], persona: str, call: str) -> Any:
    """The result of the call as the persona, or the SQLSTATE it raised; always rolled back."""
    with conn.transaction(force_rollback=True):
        act_as(conn, world["users"], persona)
        try:
            with conn.transaction():
                return scalar(conn, CALLS[call], world)
        except psycopg.Error as error:
            return error.sqlstate


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("persona", PERSONAS)
def test_only_owner_admin_developer_may_start_retry_cancel(
    world: Any, persona: str, call: str
) -> None:
    conn, built = world
    result = call_as(conn, built, persona, call)
    if persona in OPERATORS:
        assert result not in ("42501",), result
        assert not isinstance(result, str)  # an id or a jsonb, not an error
    else:
        assert result == "42501"  # insufficient_privilege, raised by the database


def test_a_refusal_says_why(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "viewer")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="you are viewer"):
            conn.execute("select ops.request_run(%s)", (built["workflow"],))


def test_a_manual_start_records_who_and_what(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "developer")
        run_id = scalar(conn, "select ops.request_run(%s)", (built["workflow"],))
        row = conn.execute(
            "select status, trigger_event, git_commit, git_ref, requested_by "
            "from ops.runs where id = %s",
            (run_id,),
        ).fetchone()
        assert row == ("queued", "manual", COMMIT, "main", built["users"]["developer"])
        message = scalar(conn, "select message from ops.run_events where run_id = %s", (run_id,))
        assert message == "Run queued: started by hand by developer@example.com"


def test_a_retry_is_a_new_run_of_the_same_commit_linked_to_the_old(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "owner")
        run_id = scalar(conn, "select ops.retry_run(%s)", (built["finished"],))
        row = conn.execute(
            "select status, trigger_event, git_commit, retry_of from ops.runs where id = %s",
            (run_id,),
        ).fetchone()
        assert row == ("queued", "retry", COMMIT, built["finished"])
        message = scalar(conn, "select message from ops.run_events where run_id = %s", (run_id,))
        assert message.startswith("Run queued: retry of run #1 by owner@example.com")


def test_only_finished_runs_are_retried(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "owner")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is queued"):
            conn.execute("select ops.retry_run(%s)", (built["queued"],))


def test_a_member_cancel_cancels_and_says_who(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "admin")
        result = scalar(conn, "select ops.request_cancel(%s, 'bad')", (built["queued"],))
        assert result == {"ok": True, "status": "canceled"}
        conn.execute("reset role")
        error = scalar(conn, "select error_message from ops.runs where id = %s", (built["queued"],))
        assert error == "canceled by admin@example.com: bad"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ("%(workflow)s, null, 'not-a-sha'", "hexadecimal"),
        ("%(workflow)s, '../etc', null", "not a valid branch"),
        ("%(workflow)s, 'a b', null", "not a valid branch"),
    ],
)
def test_hostile_refs_and_commits_are_refused(world: Any, args: str, match: str) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "developer")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=match):
            conn.execute(f"select ops.request_run({args})".encode(), built)


def test_outsiders_learn_nothing_about_unknown_ids(world: Any) -> None:
    conn, built = world
    unknown = "00000000-0000-0000-0000-000000000000"
    with conn.transaction(force_rollback=True):
        act_as(conn, built["users"], "non-member")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select ops.request_run(%s)", (unknown,))


def test_the_service_role_may_and_the_reader_may_not(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        conn.execute("set local role service_role")
        run_id = scalar(conn, "select ops.request_run(%s)", (built["workflow"],))
        assert scalar(conn, "select requested_by from ops.runs where id = %s", (run_id,)) is None
    with conn.transaction(force_rollback=True):
        conn.execute("set local role ops_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select ops.request_run(%s)", (built["workflow"],))
