"""Which database a command works on: `--database-url` / `DATABASE_URL`, else the embedded one.

The embedded server is one per machine user; in it, each repository has its own database
(as Terraform's local state belongs to its folder): named from the path of the repository's
root (the git work tree holding the state directory, else the state directory itself), so a
plan of one repository never sees, or prunes, another's rows.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reconciler.db import migrations
from reconciler.db.connection import connect, describe
from reconciler.db.embedded import EmbeddedPostgres

log = logging.getLogger("reconciler")
_repository: list[Path] = [Path(".")]  # set once per process by the command line (-C)


@dataclass(frozen=True)
class Target:
    conninfo: str
    embedded: bool
    repository: Path | None = None

    @property
    def description(self) -> str:
        where = describe(self.conninfo)
        if self.embedded:
            return f"embedded PostgreSQL ({where}) of {self.repository}"
        return where


def use_repository(path: Path) -> None:
    """The folder whose repository's embedded database commands without files use."""
    _repository[0] = path


def repository_root(path: Path) -> Path:
    """The git work tree holding `path`, else `path` itself (resolved)."""
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        if (folder / ".git").exists():
            return folder
    return resolved


def database_name(root: Path) -> str:
    """`repo_<folder name>_<hash of the path>`: readable, unique per path, within 63 bytes."""
    stem = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_")[:40] or "root"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return f"repo_{stem}_{digest}"


@contextmanager
def open_target(
    url: str | None, *, lock_timeout_s: float, repository: Path | None = None
) -> Iterator[Target]:
    """The database to use. The embedded one is started if needed, the repository's database
    created and migrated on first use."""
    if url:
        log.debug("database: %s", describe(url))
        yield Target(url, embedded=False)
        return
    root = repository_root(repository or _repository[0])
    server = EmbeddedPostgres.default()
    with server.session(database_name(root)) as conninfo:
        with connect(conninfo) as conn:
            migrations.migrate(conn, lock_timeout_s)
        target = Target(conninfo, embedded=True, repository=root)
        log.debug("database: %s", target.description)
        yield target
