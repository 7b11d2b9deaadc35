"""Real PostgreSQL for every test: DATABASE_URL when set, else the embedded server.

A template database is migrated once per session; each test that needs a clean schema gets a
copy (`CREATE DATABASE ... TEMPLATE`), dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from reconciler.db import migrations
from reconciler.db.embedded import EmbeddedPostgres, Layout, ServerUser, package_version

_counter = itertools.count()


def test_state_dir() -> Path:
    """A state directory for the tests' embedded server, kept between runs (initdb once).
    Under the system temp folder, which the unprivileged server user can enter."""
    path = Path(tempfile.gettempdir()) / f"ops-reconciler-tests-{os.geteuid()}"
    path.mkdir(mode=0o755, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def server_conninfo() -> Iterator[str]:
    """Conninfo of a superuser connection to the server the tests use."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(
        Layout(test_state_dir(), package_version()), ServerUser.for_current_process()
    )
    with server.session() as conninfo:
        yield conninfo


def _admin(server_conninfo: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server_conninfo, autocommit=True)


def create_database(server_conninfo: str, template: str | None = None) -> str:
    name = f"ops_test_{os.getpid()}_{next(_counter)}"
    query = sql.SQL("create database {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" template {}").format(sql.Identifier(template))
    with _admin(server_conninfo) as admin:
        admin.execute(query)
    return name


def drop_database(server_conninfo: str, name: str) -> None:
    with _admin(server_conninfo) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_db(server_conninfo: str) -> Iterator[str]:
    name = create_database(server_conninfo)
    with psycopg.connect(make_conninfo(server_conninfo, dbname=name)) as conn:
        migrations.migrate(conn, lock_timeout_s=30)
    yield name
    drop_database(server_conninfo, name)


@pytest.fixture
def db_url(server_conninfo: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database."""
    name = create_database(server_conninfo, template=template_db)
    yield make_conninfo(server_conninfo, dbname=name)
    drop_database(server_conninfo, name)


@pytest.fixture
def empty_db_url(server_conninfo: str) -> Iterator[str]:
    """A fresh database with nothing installed."""
    name = create_database(server_conninfo)
    yield make_conninfo(server_conninfo, dbname=name)
    drop_database(server_conninfo, name)


@pytest.fixture(scope="module")
def module_db_url(server_conninfo: str, template_db: str) -> Iterator[str]:
    """A migrated database shared by one module's tests (each keeps to its own transaction)."""
    name = create_database(server_conninfo, template=template_db)
    yield make_conninfo(server_conninfo, dbname=name)
    drop_database(server_conninfo, name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection
