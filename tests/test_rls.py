"""Row-level security as the real `authenticated` and `anon` roles, with the JWT's `sub` set.

Each case runs one operation on a row of project P as one persona, inside a transaction that is
rolled back, and records whether it took effect. The expected matrix is written out in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.helpers import make_project, make_run, make_user, make_workflow, scalar

PERSONAS = ["owner", "admin", "developer", "viewer", "non-member", "anonymous"]
MEMBERS = {"owner", "admin", "developer", "viewer"}
EVERY_USER = MEMBERS | {"non-member"}
NOBODY: set[str] = set()
EDITORS = {"owner", "admin", "developer"}
MANAGERS = {"owner", "admin"}

# table -> operation -> the personas for whom the operation takes effect on project P's row
EXPECTED: dict[str, dict[str, set[str]]] = {
    "projects": {"select": MEMBERS, "insert": NOBODY, "update": {"owner"}, "delete": NOBODY},
    # history survives members: they disable a workflow, never delete it (0011)
    "workflows": {"select": MEMBERS, "insert": EDITORS, "update": EDITORS, "delete": NOBODY},
    "runs": {"select": MEMBERS, "insert": EDITORS, "update": NOBODY, "delete": NOBODY},
    "run_events": {"select": MEMBERS, "insert": NOBODY, "update": NOBODY, "delete": NOBODY},
    "run_artifacts": {"select": MEMBERS, "insert": NOBODY, "update": NOBODY, "delete": NOBODY},
    "run_logs": {"select": MEMBERS, "insert": NOBODY, "update": NOBODY, "delete": NOBODY},
    "tools": {"select": EVERY_USER, "insert": NOBODY, "update": NOBODY, "delete": NOBODY},
    "upgrade_advisories": {
        "select": EVERY_USER,
        "insert": NOBODY,
        "update": NOBODY,
        "delete": NOBODY,
    },
    # removing a member is ops.remove_member() (0011): DELETE would let them LOCK the table
    "project_memberships": {
        "select": MEMBERS,
        "insert": MANAGERS,
        "update": MANAGERS,
        "delete": NOBODY,
    },
}


@dataclass(frozen=True)
class World:
    users: dict[str, Any]
    ids: dict[str, Any]  # the row of project P in each table, and what inserts need


def build_world(conn: psycopg.Connection[Any]) -> World:
    users = {p: make_user(conn, f"{p}@example.com") for p in PERSONAS if p != "anonymous"}
    users["newcomer"] = make_user(conn, "newcomer@example.com")
    project = make_project(conn, "project-p")
    other = make_project(conn, "project-q")
    memberships = {}
    for role in MEMBERS:
        memberships[role] = scalar(
            conn,
            "insert into ops.project_memberships (project_id, user_id, role) "
            "values (%s, %s, %s) returning id",
            (project, users[role], role),
        )
    conn.execute(
        "insert into ops.project_memberships (project_id, user_id, role) values (%s, %s, 'owner')",
        (other, users["non-member"]),
    )
    workflow = make_workflow(conn, project)
    run = make_run(conn, project, workflow)
    scalar(conn, "select ops.claim_next_run('w')")
    scalar(conn, "select ops.append_run_log(%s, 'info', 'hello')", (run,))
    artifact = scalar(conn, "select ops.add_run_artifact(%s, 'a', 'file:///a')", (run,))
    tool = scalar(
        conn,
        "insert into ops.tools (tool_name, version, docker_image) "
        "values ('odoo', '18.0', 'odoo:18.0') returning id",
    )
    advisory = scalar(
        conn,
        "insert into ops.upgrade_advisories (advisory_key, from_version, to_version, severity, "
        "title, description) values ('k', '17.0', '18.0', 'low', 't', 'd') returning id",
    )
    return World(
        users,
        {
            "project": project,
            "workflow": workflow,
            "run": run,
            "run_event": scalar(conn, "select id from ops.run_events where run_id = %s", (run,)),
            "run_log": scalar(conn, "select id from ops.run_logs where run_id = %s", (run,)),
            "artifact": artifact["artifact_id"],
            "tool": tool,
            "advisory": advisory,
            "viewer_membership": memberships["viewer"],
            "newcomer": users["newcomer"],
        },
    )


# The statement per table and operation; each touches project P's row (or adds one to P).
STATEMENTS: dict[str, dict[str, str]] = {
    "projects": {
        "select": "select id from ops.projects where id = %(project)s",
        "insert": "insert into ops.projects (workspace_key, slug, name, odoo_version) "
        "values ('new_one', 'new-one', 'New', '18.0')",
        "update": "update ops.projects set name = name || '!' where id = %(project)s",
        "delete": "delete from ops.projects where id = %(project)s",
    },
    "workflows": {
        "select": "select id from ops.workflows where id = %(workflow)s",
        "insert": "insert into ops.workflows (project_id, workflow_type, name) "
        "values (%(project)s, 'test', 'nightly')",
        "update": "update ops.workflows set enabled = false where id = %(workflow)s",
        "delete": "delete from ops.workflows where id = %(workflow)s",
    },
    "runs": {
        "select": "select id from ops.runs where id = %(run)s",
        "insert": "insert into ops.runs (project_id, workflow_id) "
        "values (%(project)s, %(workflow)s)",
        "update": "update ops.runs set metadata = '{\"x\": 1}' where id = %(run)s",
        "delete": "delete from ops.runs where id = %(run)s",
    },
    "run_events": {
        "select": "select id from ops.run_events where id = %(run_event)s",
        "insert": "insert into ops.run_events (run_id, event_type, message) "
        "values (%(run)s, 'info', 'forged')",
        "update": "update ops.run_events set message = 'x' where id = %(run_event)s",
        "delete": "delete from ops.run_events where id = %(run_event)s",
    },
    "run_artifacts": {
        "select": "select id from ops.run_artifacts where id = %(artifact)s",
        "insert": "insert into ops.run_artifacts (run_id, artifact_key, artifact_url) "
        "values (%(run)s, 'forged', 'file:///x')",
        "update": "update ops.run_artifacts set size_bytes = 1 where id = %(artifact)s",
        "delete": "delete from ops.run_artifacts where id = %(artifact)s",
    },
    "run_logs": {
        "select": "select id from ops.run_logs where id = %(run_log)s",
        "insert": "insert into ops.run_logs (run_id, log_level, message) "
        "values (%(run)s, 'info', 'forged')",
        "update": "update ops.run_logs set message = 'x' where id = %(run_log)s",
        "delete": "delete from ops.run_logs where id = %(run_log)s",
    },
    "tools": {
        "select": "select id from ops.tools where id = %(tool)s",
        "insert": "insert into ops.tools (tool_name, version, docker_image) "
        "values ('nginx', '1.27', 'nginx:1.27')",
        "update": "update ops.tools set docker_image = 'evil:latest' where id = %(tool)s",
        "delete": "delete from ops.tools where id = %(tool)s",
    },
    "upgrade_advisories": {
        "select": "select id from ops.upgrade_advisories where id = %(advisory)s",
        "insert": "insert into ops.upgrade_advisories (advisory_key, from_version, to_version, "
        "severity, title, description) values ('x', '18.0', '19.0', 'low', 't', 'd')",
        "update": "update ops.upgrade_advisories set title = 'x' where id = %(advisory)s",
        "delete": "delete from ops.upgrade_advisories where id = %(advisory)s",
    },
    "project_memberships": {
        "select": "select id from ops.project_memberships where id = %(viewer_membership)s",
        "insert": "insert into ops.project_memberships (project_id, user_id, role) "
        "values (%(project)s, %(newcomer)s, 'viewer')",
        "update": "update ops.project_memberships set role = 'developer' "
        "where id = %(viewer_membership)s",
        "delete": "delete from ops.project_memberships where id = %(viewer_membership)s",
    },
}


@pytest.fixture(scope="module")
def world(module_db_url: str) -> Iterator[tuple[psycopg.Connection[Any], World]]:
    with psycopg.connect(module_db_url) as conn:
        built = build_world(conn)
        conn.commit()
        yield conn, built


def act_as(conn: psycopg.Connection[Any], world: World, persona: str) -> None:
    """Become the persona the way PostgREST does: a role, and the JWT's sub claim."""
    if persona == "anonymous":
        conn.execute("set local role anon")
        return
    conn.execute("set local role authenticated")
    conn.execute(
        "select set_config('request.jwt.claim.sub', %s, true)", (str(world.users[persona]),)
    )


def takes_effect(conn: psycopg.Connection[Any], world: World, persona: str, query: str) -> bool:
    """Whether the statement works and touches a row, as the persona; always rolled back."""
    with conn.transaction(force_rollback=True):
        act_as(conn, world, persona)
        try:
            with conn.transaction():
                cursor = conn.execute(query.encode(), world.ids)
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.CheckViolation):
            return False  # permission denied, or the row-level security policy refused it
        return cursor.rowcount > 0


CASES = [
    (table, operation, persona)
    for table, operations in EXPECTED.items()
    for operation in operations
    for persona in PERSONAS
]


@pytest.mark.parametrize(("table", "operation", "persona"), CASES)
def test_rls_matrix(world: Any, table: str, operation: str, persona: str) -> None:
    conn, built = world
    expected = persona in EXPECTED[table][operation]
    assert takes_effect(conn, built, persona, STATEMENTS[table][operation]) is expected


def visible_projects(conn: psycopg.Connection[Any], world: World, persona: str) -> list[str]:
    with conn.transaction(force_rollback=True):
        act_as(conn, world, persona)
        return [r[0] for r in conn.execute("select slug from ops.projects order by slug")]


def test_each_member_sees_only_their_projects(world: Any) -> None:
    conn, built = world
    assert visible_projects(conn, built, "viewer") == ["project-p"]
    assert visible_projects(conn, built, "non-member") == ["project-q"]


def test_admin_cannot_create_or_touch_owners(world: Any) -> None:
    conn, built = world
    make_owner = (
        "insert into ops.project_memberships (project_id, user_id, role) "
        "values (%(project)s, %(newcomer)s, 'owner')"
    )
    promote = "update ops.project_memberships set role = 'owner' where id = %(viewer_membership)s"
    demote_owner = (
        "update ops.project_memberships set role = 'viewer' "
        "where project_id = %(project)s and role = 'owner'"
    )
    for query in (make_owner, promote, demote_owner):
        assert not takes_effect(conn, built, "admin", query)
    for query in (make_owner, promote):
        assert takes_effect(conn, built, "owner", query)
    # demoting owners: tests/test_db_hardening.py (a project keeps one)


def test_developer_cannot_insert_a_finished_run(world: Any) -> None:
    conn, built = world
    forged = (
        "insert into ops.runs (project_id, workflow_id, status, exit_code) "
        "values (%(project)s, %(workflow)s, 'succeeded', 0)"
    )
    assert not takes_effect(conn, built, "developer", forged)


def test_members_cannot_call_the_worker_functions(world: Any) -> None:
    conn, built = world
    assert not takes_effect(conn, built, "owner", "select ops.claim_next_run('sneaky')")


def test_the_service_role_bypasses_rls(world: Any) -> None:
    conn, _ = world
    with conn.transaction(force_rollback=True):
        conn.execute("set local role service_role")
        assert scalar(conn, "select count(*) from ops.projects") == 2
        assert scalar(conn, "select ops.claim_next_run('w2')")["run_id"] is None


def test_newer_postgrest_claims_setting_is_understood(world: Any) -> None:
    conn, built = world
    with conn.transaction(force_rollback=True):
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            (f'{{"sub": "{built.users["viewer"]}", "role": "authenticated"}}',),
        )
        assert [r[0] for r in conn.execute("select slug from ops.projects")] == ["project-p"]
