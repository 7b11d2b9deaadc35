"""Which database a command works on: `--database-url` / `DATABASE_URL`, else the embedded one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from reconciler.db import migrations
from reconciler.db.connection import connect, describe
from reconciler.db.embedded import EmbeddedPostgres


@dataclass(frozen=True)
class Target:
    conninfo: str
    embedded: bool

    @property
    def description(self) -> str:
        where = describe(self.conninfo)
        return f"embedded PostgreSQL ({where})" if self.embedded else where


@contextmanager
def open_target(url: str | None, *, lock_timeout_s: float) -> Iterator[Target]:
    """The database to use. The embedded one is started if needed and migrated on first use."""
    if url:
        yield Target(url, embedded=False)
        return
    with EmbeddedPostgres.default().session() as conninfo:
        with connect(conninfo) as conn:
            migrations.migrate(conn, lock_timeout_s)
        yield Target(conninfo, embedded=True)
