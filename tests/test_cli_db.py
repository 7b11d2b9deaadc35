"""`reconcile db ...` end to end, in a subprocess, against the real server."""

from __future__ import annotations

import json

import psycopg
import pytest

from reconciler.db import migrations
from tests.cli import reconcile


def test_migrate_twice_then_status(empty_db_url: str) -> None:
    first = reconcile("db", "migrate", "--database-url", empty_db_url)
    assert first.code == 0, first.stderr
    assert first.stdout.count("applied ") == len(migrations.shipped())
    second = reconcile("db", "migrate", env={"DATABASE_URL": empty_db_url})
    assert second.code == 0 and second.stdout.startswith("nothing to migrate")
    status = reconcile("db", "status", "--database-url", empty_db_url)
    assert status.code == 0
    assert f"schema version: {migrations.shipped()[-1].version}" in status.stdout
    assert "installed the compatible auth schema" in status.stdout
    assert "status: up to date" in status.stdout


def test_status_as_json(db_url: str) -> None:
    result = reconcile("db", "status", "--output", "json", "--database-url", db_url)
    report = json.loads(result.stdout)
    assert report["up_to_date"] and report["pending"] == [] and report["auth"] == "compatible"


def test_status_of_an_unmigrated_database_names_the_fix(empty_db_url: str) -> None:
    result = reconcile("db", "status", "--database-url", empty_db_url)
    assert result.code == 1
    assert "0001_auth_compat" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "error: the database schema is at version 0, this ops-reconciler needs "
        f"{migrations.shipped()[-1].version}; run `reconcile db migrate`"
    ]


def test_schema_newer_than_the_code_is_one_line_and_exit_1(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("insert into ops.schema_migrations values (9999, 'future', 'x')")
    for command in (["db", "status"], ["db", "migrate"]):
        result = reconcile(*command, "--database-url", db_url)
        assert result.code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "newer than this ops-reconciler" in lines[0]
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:1/ops", "Connection refused"),
        ("postgresql://postgres@127.0.0.1:5432/ops?sslmode=bogus", "invalid sslmode value"),
        ("not a url", "invalid database URL"),
    ],
)
def test_unreachable_database_is_one_line_and_exit_1(url: str, expected: str) -> None:
    result = reconcile("db", "status", "--database-url", url)
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert result.stdout == ""


def test_drop_needs_confirmation_and_then_removes_everything(db_url: str) -> None:
    refused = reconcile("db", "drop", "--database-url", db_url)
    assert refused.code == 1 and "--yes" in refused.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select to_regclass('ops.runs') is not null").fetchone() == (True,)
    dropped = reconcile("db", "drop", "--yes", "--database-url", db_url)
    assert dropped.code == 0, dropped.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("select to_regnamespace('ops') is null").fetchone() == (True,)


def test_migrate_waits_then_times_out_on_a_held_lock(db_url: str) -> None:
    with psycopg.connect(db_url) as holder:
        holder.execute("select pg_advisory_lock(%s)", (migrations.MIGRATE_LOCK_KEY,))
        result = reconcile("db", "migrate", "--lock-timeout", "0.5", "--database-url", db_url)
    assert result.code == 1
    assert "another reconcile holds the lock" in result.stderr


def test_usage_errors_exit_1_with_one_line() -> None:
    result = reconcile("db", "frobnicate")
    assert result.code == 1
    assert result.stderr.startswith("error: No such command 'frobnicate'")
