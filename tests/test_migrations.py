"""`migrate` on a real server: fresh, twice, concurrently, on legacy tables, locked, too new."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from reconciler.db import migrations
from reconciler.errors import LockTimeout, SchemaConflict, SchemaTooNew
from tests.helpers import scalar

TABLES = [
    "projects",
    "workflows",
    "runs",
    "run_events",
    "run_artifacts",
    "run_logs",
    "tools",
    "upgrade_advisories",
    "project_memberships",
]
RPC_FUNCTIONS = [
    "claim_next_run",
    "start_workflow_run",
    "complete_workflow_run",
    "append_run_log",
    "add_run_artifact",
    "list_queued_runs",
]

# Everything the migrations define, as text, to compare a database before and after.
FINGERPRINT = """
select 'table ' || c.relname || ' ' || c.relkind::text || ' rls=' || c.relrowsecurity::text
  from pg_class c where c.relnamespace = 'ops'::regnamespace
union all
select 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
  from pg_attribute a join pg_class c on c.oid = a.attrelid
  where c.relnamespace = 'ops'::regnamespace and a.attnum > 0 and not a.attisdropped
union all
select 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
  from pg_constraint where connamespace = 'ops'::regnamespace
union all
select 'function ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc)
  from pg_proc p where p.pronamespace = 'ops'::regnamespace
union all
select 'policy ' || tablename || '.' || policyname || ' ' || cmd || coalesce(qual, '')
  from pg_policies where schemaname = 'ops'
union all
select 'trigger ' || tgname from pg_trigger t join pg_class c on c.oid = t.tgrelid
  where c.relnamespace = 'ops'::regnamespace and not t.tgisinternal
union all
select 'grant ' || table_name || ' ' || grantee || ' ' || privilege_type
  from information_schema.role_table_grants where table_schema = 'ops'
union all
select 'migration ' || version || ' ' || checksum from ops.schema_migrations
order by 1
"""


def fingerprint(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(FINGERPRINT)]


def test_fresh_database_gets_every_migration_recorded(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        applied = migrations.migrate(conn, lock_timeout_s=5)
        recorded = conn.execute(
            "select version, checksum from ops.schema_migrations order by version"
        ).fetchall()
    assert [m.version for m in applied] == [m.version for m in migrations.shipped()]
    assert recorded == [(m.version, m.checksum) for m in migrations.shipped()]


def test_second_migrate_applies_nothing_and_changes_nothing(db_url: str) -> None:
    before = fingerprint(db_url)
    with psycopg.connect(db_url) as conn:
        assert migrations.migrate(conn, lock_timeout_s=5) == ()
    assert fingerprint(db_url) == before


def test_seed_verification_counts(conn: psycopg.Connection[Any]) -> None:
    """The checks the seed's own verification blocks make."""
    assert (
        scalar(
            conn,
            "select count(*) from information_schema.tables "
            "where table_schema = 'ops' and table_name = any(%s)",
            (TABLES,),
        )
        == 9
    )
    assert (
        scalar(
            conn,
            "select count(*) from pg_proc where pronamespace = 'ops'::regnamespace "
            "and proname = any(%s)",
            (RPC_FUNCTIONS,),
        )
        == 6
    )
    assert scalar(conn, "select count(*) from pg_policies where schemaname = 'ops'") >= 13
    assert (
        scalar(
            conn,
            "select count(*) from pg_tables where schemaname = 'ops' and rowsecurity "
            "and tablename = any(%s)",
            (TABLES,),
        )
        == 9
    )
    assert (
        scalar(
            conn,
            "select count(*) from pg_constraint where connamespace = 'ops'::regnamespace "
            "and conname like 'projects_%%_format'",
        )
        == 3
    )
    assert (
        scalar(
            conn, "select count(*) from pg_trigger where tgname = 'enforce_run_status_transition'"
        )
        == 1
    )


def test_concurrent_migrates_apply_each_migration_once(empty_db_url: str) -> None:
    results: list[object] = []

    def run() -> None:
        with psycopg.connect(empty_db_url) as conn:
            results.append(migrations.migrate(conn, lock_timeout_s=30))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, len(migrations.shipped())]  # type: ignore[arg-type]
    with psycopg.connect(empty_db_url) as conn:
        assert scalar(conn, "select count(*) from ops.schema_migrations") == len(
            migrations.shipped()
        )


def test_migrate_gives_up_when_the_lock_is_held_too_long(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as holder, psycopg.connect(empty_db_url) as conn:
        holder.execute("select pg_advisory_lock(%s)", (migrations.MIGRATE_LOCK_KEY,))
        with pytest.raises(LockTimeout, match="another reconcile holds the lock"):
            migrations.migrate(conn, lock_timeout_s=0.2)
        assert scalar(conn, "select to_regclass('ops.projects') is null")


def test_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into ops.schema_migrations (version, name, checksum) "
            "values (9999, 'from_the_future', 'x')"
        )
        conn.commit()
        with pytest.raises(SchemaTooNew, match="version 9999, newer than this"):
            migrations.migrate(conn, lock_timeout_s=5)
        status = migrations.read_status(conn)
    assert status.version == 9999 and not status.up_to_date
    with pytest.raises(SchemaTooNew):
        migrations.require_current(status)


def test_edited_migration_is_reported(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("update ops.schema_migrations set checksum = 'x' where version = 3")
        status = migrations.read_status(conn)
    assert [a.version for a in status.edited] == [3]


def test_legacy_agent_tables_are_renamed_with_their_rows(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            """
            create schema ops;
            create table ops.runs (id serial primary key, agent text not null, unique (agent));
            create index runs_agent_idx on ops.runs (agent);
            create table ops.run_logs (id bigserial primary key,
                                       run_id int references ops.runs(id), line text);
            insert into ops.runs (agent) values ('a1'), ('a2');
            insert into ops.run_logs (run_id, line) values (1, 'hello'), (2, 'world');
            """
        )
        conn.commit()
        migrations.migrate(conn, lock_timeout_s=5)
        assert conn.execute("select agent from ops.agent_runs order by id").fetchall() == [
            ("a1",),
            ("a2",),
        ]
        assert scalar(conn, "select count(*) from ops.agent_run_logs") == 2
        assert scalar(conn, "select count(*) from ops.agent_runs_v") == 2
        # the new ops.runs is the control-plane queue
        assert (
            scalar(
                conn,
                "select count(*) from information_schema.columns where table_schema = 'ops' "
                "and table_name = 'runs' and column_name = 'workflow_id'",
            )
            == 1
        )
        assert "Renamed from ops.runs" in scalar(
            conn, "select obj_description('ops.agent_runs'::regclass)"
        )


def test_fresh_database_has_no_legacy_leftovers(conn: psycopg.Connection[Any]) -> None:
    assert (
        scalar(
            conn,
            "select count(*) from pg_class where relnamespace = 'ops'::regnamespace "
            "and relname like 'agent%%'",
        )
        == 0
    )


def test_foreign_ops_schema_is_refused_and_nothing_is_written(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("create schema ops; create table ops.workflows (id int)")
        conn.commit()
        with pytest.raises(SchemaConflict, match=r"ops\.workflows already exists"):
            migrations.migrate(conn, lock_timeout_s=5)
        assert scalar(conn, "select to_regclass('ops.schema_migrations') is null")
        assert scalar(conn, "select to_regclass('auth.users') is null")


def test_plain_postgres_gets_the_compatible_auth_schema(conn: psycopg.Connection[Any]) -> None:
    assert migrations.read_status(conn).auth == "compatible"
    roles = conn.execute(
        "select rolname, rolbypassrls from pg_roles "
        "where rolname in ('anon', 'authenticated', 'service_role') order by 1"
    ).fetchall()
    assert roles == [("anon", False), ("authenticated", False), ("service_role", True)]


def test_supabase_auth_schema_is_found_and_left_alone(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            """
            create schema auth;
            create table auth.users (id uuid primary key, email varchar(255),
                                     is_sso_user boolean not null default false);
            """
        )
        conn.commit()
        migrations.migrate(conn, lock_timeout_s=5)
        assert migrations.read_status(conn).auth == "supabase"
        columns = [
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'auth' and table_name = 'users' order by ordinal_position"
            )
        ]
    assert columns == ["id", "email", "is_sso_user"]


def test_drop_removes_the_schema_and_restores_legacy_tables(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("create schema ops; create table ops.runs (id serial primary key)")
        conn.execute("insert into ops.runs default values")
        conn.commit()
        migrations.migrate(conn, lock_timeout_s=5)
        migrations.drop(conn, lock_timeout_s=5)
        assert (
            scalar(
                conn,
                "select count(*) from pg_class where relnamespace = 'ops'::regnamespace "
                "and relkind in ('r', 'v')",
            )
            == 1
        )  # only the legacy table, under its old name
        assert scalar(conn, "select count(*) from ops.runs") == 1
        assert (
            scalar(conn, "select count(*) from pg_proc where pronamespace = 'ops'::regnamespace")
            == 0
        )
        # and it installs again
        assert len(migrations.migrate(conn, lock_timeout_s=5)) == len(migrations.shipped())


def test_drop_on_a_fresh_install_leaves_no_ops_schema(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        migrations.drop(conn, lock_timeout_s=5)
        assert scalar(conn, "select to_regnamespace('ops') is null")
        migrations.drop(conn, lock_timeout_s=5)  # a second drop is harmless
