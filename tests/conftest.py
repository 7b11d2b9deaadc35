"""Real PostgreSQL for every test: DATABASE_URL when set, else the embedded server.

A template database is migrated once per session; each test that needs a clean schema gets a
copy (`CREATE DATABASE ... TEMPLATE`), dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from reconciler.db import migrations
from reconciler.db.embedded import EmbeddedPostgres, Layout, ServerUser, package_version

_counter = itertools.count()
SERVER_GRACE_S = 20  # a watchdog stops its server within a second of the last client leaving


def pytest_configure(config: pytest.Config) -> None:
    """Every temporary folder of this session (and of the commands it runs) lies in one folder
    of its own, so the servers this suite started can be told from the other servers of the
    machine (other people's suites, other engineers' trials) at its end."""
    suite = Path(tempfile.mkdtemp(prefix="ops-reconciler-suite-"))
    suite.chmod(0o755)  # run as root, the server user must enter it
    os.environ["TMPDIR"] = str(suite)
    tempfile.tempdir = None
    config.stash[_SUITE_TMP] = suite


_SUITE_TMP = pytest.StashKey[Path]()


def servers_under(roots: list[Path]) -> dict[int, Path]:
    """postmaster pid -> data directory, of the PostgreSQL servers whose data directory lies
    under one of `roots` (read from /proc: `postgres -D DIR ...`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"/postgres") or b"-D" not in argv[:-1]:
            continue
        data = Path(os.fsdecode(argv[argv.index(b"-D") + 1]))
        if any(data.is_relative_to(root) for root in roots):
            found[int(entry.name)] = data
    return found


@pytest.fixture(scope="session", autouse=True)
def no_server_left_behind(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """At the end of the suite, no embedded server it started is still running (each stops
    once its last client has gone). Those left are stopped, and the suite fails."""
    roots = [request.config.stash[_SUITE_TMP], tmp_path_factory.getbasetemp().resolve()]
    yield
    deadline = time.monotonic() + SERVER_GRACE_S
    while (left := servers_under(roots)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(roots[0], ignore_errors=True)
    assert not left, f"the suite left embedded PostgreSQL servers running: {left}"


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
