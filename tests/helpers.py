"""Small builders for rows the tests need, written with plain SQL on a superuser connection."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def scalar(conn: Conn, query: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
    row = conn.execute(query.encode(), params).fetchone()
    assert row is not None
    return row[0]


def make_project(conn: Conn, slug: str = "acme-erp") -> uuid.UUID:
    return scalar(  # type: ignore[no-any-return]
        conn,
        "insert into ops.projects (workspace_key, slug, name, odoo_version) "
        "values (%s, %s, %s, '18.0') returning id",
        (slug.replace("-", "_"), slug, slug.title()),
    )


def make_workflow(conn: Conn, project_id: uuid.UUID, name: str = "build-main") -> uuid.UUID:
    return scalar(  # type: ignore[no-any-return]
        conn,
        "insert into ops.workflows (project_id, workflow_type, name) "
        "values (%s, 'build', %s) returning id",
        (project_id, name),
    )


def make_run(
    conn: Conn, project_id: uuid.UUID, workflow_id: uuid.UUID, key: str | None = None
) -> uuid.UUID:
    return scalar(  # type: ignore[no-any-return]
        conn,
        "insert into ops.runs (project_id, workflow_id, idempotency_key) "
        "values (%s, %s, %s) returning id",
        (project_id, workflow_id, key),
    )


def make_user(conn: Conn, email: str) -> uuid.UUID:
    return scalar(conn, "insert into auth.users (email) values (%s) returning id", (email,))  # type: ignore[no-any-return]


def status_of(conn: Conn, run_id: uuid.UUID) -> str:
    return str(scalar(conn, "select status from ops.runs where id = %s", (run_id,)))
