"""The embedded PostgreSQL: first use, reuse, sharing, never an orphan, and its errors.

Each test gets its own state directory (a fresh `initdb`), under the system temp folder so that
the unprivileged server user can enter it when the tests run as root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reconciler.db.embedded import (
    EmbeddedPostgres,
    Layout,
    ServerUser,
    _LockFile,
    package_version,
)
from tests.cli import reconcile

pytestmark = pytest.mark.slow
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ops-reconciler-embedded-"))
    path.chmod(0o755)
    yield path
    server = EmbeddedPostgres(Layout(path, package_version()), ServerUser.for_current_process())
    if server.layout.data.exists() and server.is_running():
        server.stop()
    shutil.rmtree(path, ignore_errors=True)


def server_for(state_dir: Path) -> EmbeddedPostgres:
    return EmbeddedPostgres(Layout(state_dir, package_version()), ServerUser.for_current_process())


def wait_until_stopped(server: EmbeddedPostgres, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not (server.layout.data / "postmaster.pid").exists():
            return True
        time.sleep(0.05)
    return False


def test_first_use_creates_migrates_and_stops_afterwards(state_dir: Path) -> None:
    result = reconcile("db", "status", env={"RECONCILE_STATE_DIR": str(state_dir)})
    assert result.code == 0, result.stderr
    assert "database: embedded PostgreSQL" in result.stdout
    assert "status: up to date" in result.stdout
    assert wait_until_stopped(server_for(state_dir))


def test_data_is_kept_between_uses(state_dir: Path) -> None:
    server = server_for(state_dir)
    with server.session() as conninfo, psycopg.connect(conninfo) as conn:
        conn.execute("create table kept (x int); insert into kept values (42)")
    assert wait_until_stopped(server)
    with server.session() as conninfo, psycopg.connect(conninfo) as conn:
        assert conn.execute("select x from kept").fetchone() == (42,)


def test_clients_share_one_server_until_the_last_leaves(state_dir: Path) -> None:
    first, second = server_for(state_dir), server_for(state_dir)
    with first.session() as conninfo:
        with second.session() as same:
            assert same == conninfo
        with psycopg.connect(conninfo) as conn:  # the first client still has its server
            assert conn.execute("select 1").fetchone() == (1,)
    assert wait_until_stopped(first)


CLIENT = """
import sys, time
from pathlib import Path
from reconciler.db.embedded import (
    EmbeddedPostgres,
    Layout,
    ServerUser,
    _LockFile,
    package_version,
)
server = EmbeddedPostgres(Layout(Path(sys.argv[1]), package_version()),
                          ServerUser.for_current_process())
with server.session():
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_client_killed_with_sigkill_leaves_no_orphan_server(state_dir: Path) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(state_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
        server = server_for(state_dir)
        assert server.is_running()
        os.kill(client.pid, signal.SIGKILL)
    finally:
        client.wait()
        if client.stdout:
            client.stdout.close()
    assert wait_until_stopped(server)


def test_a_server_whose_watchdog_died_is_adopted_and_stopped(state_dir: Path) -> None:
    server = server_for(state_dir)
    with server.session():
        pass
    assert wait_until_stopped(server)
    while _LockFile.is_held(server.layout.watchdog_lock):  # the old watchdog is on its way out
        time.sleep(0.01)
    # a leaked server: started without a watchdog, as by a client killed right after the start
    server._start()
    assert server.is_running()
    with server.session() as conninfo, psycopg.connect(conninfo) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert wait_until_stopped(server)


@as_root
def test_as_root_the_server_runs_as_an_unprivileged_user(state_dir: Path) -> None:
    server = server_for(state_dir)
    with server.session():
        pid = int((server.layout.data / "postmaster.pid").read_text().split()[0])
        owner = os.stat(f"/proc/{pid}").st_uid
    assert owner != 0 and owner == ServerUser.for_current_process().uid


@as_root
def test_as_root_an_unknown_server_user_is_one_clear_line(state_dir: Path) -> None:
    result = reconcile(
        "db",
        "status",
        env={"RECONCILE_STATE_DIR": str(state_dir), "RECONCILE_EMBEDDED_USER": "no-such-user"},
    )
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        "error: running as root, the embedded PostgreSQL needs an unprivileged user, and "
        "'no-such-user' does not exist; set RECONCILE_EMBEDDED_USER or --database-url"
    ]


@as_root
def test_as_root_an_unreachable_state_dir_is_one_clear_line(state_dir: Path) -> None:
    hidden = state_dir / "private"
    hidden.mkdir(mode=0o700)
    result = reconcile("db", "status", env={"RECONCILE_STATE_DIR": str(hidden / "state")})
    assert result.code == 1
    assert "cannot enter" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (hidden / "state").exists() or not any((hidden / "state").iterdir())


def test_wrong_password_is_one_line_and_exit_1(state_dir: Path) -> None:
    """A real server with password authentication: the embedded one, switched to scram."""
    server = server_for(state_dir)
    with server.session() as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("alter role postgres password 'right-password'")
            hba = server.layout.data / "pg_hba.conf"
            hba.write_text("local all all scram-sha-256\n")
            conn.execute("select pg_reload_conf()")
        wrong = f"{conninfo} password=wrong-password"
        result = reconcile("db", "status", "--database-url", wrong)
        right = reconcile("db", "migrate", "--database-url", f"{conninfo} password=right-password")
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'password authentication failed for user "postgres"' in lines[0]
    assert "wrong-password" not in result.stderr
    assert right.code == 0, right.stderr
