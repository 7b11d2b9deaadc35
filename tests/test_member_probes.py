"""Member attacks found by trying issue 8's hardening as an attacker (migration 0018): a login
that inherits `authenticated` without a JWT is no service role, a member's own run is recorded
as theirs (never as the apply's push), and a workflow's name in the database keeps the
documented form whoever writes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.test_db_hardening import World, attempt, become, build

Conn = psycopg.Connection[Any]


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Conn, World]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn, build(conn)


@pytest.fixture
def member_login(db_url: str) -> Any:
    """A login role that inherits `authenticated` (a member's login on plain PostgreSQL)."""
    name = f"member_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"create role {name} login in role authenticated")
        try:
            params = conninfo_to_dict(db_url)
            params["user"] = name
            with psycopg.connect(make_conninfo(**params), autocommit=True) as login:
                yield login
        finally:
            admin.execute(f"drop role {name}")


def test_a_login_without_a_jwt_starts_retries_and_cancels_nothing(
    world: Any, member_login: Conn
) -> None:
    conn, w = world
    run_b = conn.execute(
        "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
        (w.project_b, w.workflow_b),
    ).fetchone()[0]
    conn.execute("update ops.runs set status = 'canceled' where id = %s", (w.run_a,))
    for call, arg in (
        ("select ops.request_run(%s)", w.workflow_b),
        ("select ops.request_cancel(%s)", run_b),
        ("select ops.retry_run(%s)", w.run_a),
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no signed-in user"):
            member_login.execute(call, (arg,))
    statuses = conn.execute("select status from ops.runs where project_id = %s", (w.project_b,))
    assert [s for (s,) in statuses] == ["queued"]


def test_the_cli_as_the_schema_owner_still_starts_runs_without_a_user(world: Any) -> None:
    conn, w = world
    run = conn.execute("select ops.request_run(%s)", (w.workflow_b,)).fetchone()[0]
    row = conn.execute(
        "select trigger_event, requested_by from ops.runs where id = %s", (run,)
    ).fetchone()
    assert row == ("manual", None)


@pytest.mark.parametrize("key", [None, "manual:x", "schedule:2026-01-01T00:00:x"])
def test_a_members_own_run_is_recorded_as_theirs(world: Any, key: str | None) -> None:
    conn, w = world
    with conn.transaction(force_rollback=True):
        become(conn, w, "developer")
        run = conn.execute(
            "insert into ops.runs (project_id, workflow_id, idempotency_key, metadata) "
            'values (%s, %s, %s, \'{"commit": "abcdef1", "trigger": "push"}\') returning id',
            (w.project_a, w.workflow_a, key),
        ).fetchone()[0]
        conn.execute("reset role")
        row = conn.execute(
            "select trigger_event, requested_by, retry_of from ops.runs where id = %s", (run,)
        ).fetchone()
        event = conn.execute(
            "select message from ops.run_events where run_id = %s order by created_at limit 1",
            (run,),
        ).fetchone()[0]
    assert row == ("manual", w.users["developer"], None)
    assert event == "Run queued: started by hand by developer@a.example"


@pytest.mark.parametrize(
    "name",
    [
        "build-main\n",
        "build-main ",
        " build-main",
        "x\x1b[31mred",
        "build\u200bmain",
        "build-main\u202e",
        "٣",
        "",
        "a" * 101,
    ],
)
def test_a_member_cannot_name_a_workflow_outside_the_documented_form(world: Any, name: str) -> None:
    conn, w = world
    insert = (
        "insert into ops.workflows (project_id, workflow_type, name) values (%(p)s, 'build', %(n)s)"
    )
    assert attempt(conn, w, "developer", insert, {"p": w.project_a, "n": name}) == 0
    assert attempt(conn, w, "developer", insert, {"p": w.project_a, "n": "build-other"}) == 1


def test_an_outsider_cannot_lock_another_projects_memberships(world: Any, db_url: str) -> None:
    conn, w = world
    owner_a = conn.execute(
        "select id from ops.project_memberships where project_id = %s and role = 'owner'",
        (w.project_a,),
    ).fetchone()[0]
    with psycopg.connect(db_url) as outsider:
        become(outsider, w, "owner-b")
        assert outsider.execute("select ops.remove_member(%s)", (owner_a,)).fetchone() == (False,)
        # the outsider's transaction is still open: the row must not be held
        conn.execute(
            "select 1 from ops.project_memberships where id = %s for update nowait", (owner_a,)
        )
        outsider.rollback()


def test_every_ops_function_pins_its_search_path(conn: Conn) -> None:
    """No function of the schema resolves a name through the caller's search_path, where a
    role that may create objects in `public` (Supabase's API roles) could put its own.
    ops.email_key stays inlinable for its index and calls only pg_catalog's functions."""
    loose = conn.execute(
        "select p.oid::regprocedure::text from pg_proc p "
        "join pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'ops' and not coalesce(p.proconfig::text like '%search_path=%', false)"
    ).fetchall()
    assert loose == [("ops.email_key(text)",)]
