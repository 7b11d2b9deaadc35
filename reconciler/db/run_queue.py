"""The run queue on PostgreSQL: the calls a worker makes, each a named query of
`sql/run_queue.sql`, on one connection per thread (the loop, each run's heartbeat and logs).

A lost connection is `QueueUnavailable` (the worker waits and retries); psycopg stays here.
Connections use the project's settings (connect timeout, application name).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from reconciler.db import schedules
from reconciler.db.connection import APPLICATION_NAME, CONNECT_TIMEOUT_S
from reconciler.db.queries import query
from reconciler.errors import ReconcilerError

Answer = dict[str, Any]


class QueueUnavailable(ReconcilerError):
    """The queue's database cannot be reached right now; try again."""


class PostgresRunQueue:
    def __init__(self, url: str) -> None:
        self.conninfo = make_conninfo(
            url, connect_timeout=CONNECT_TIMEOUT_S, application_name=f"{APPLICATION_NAME}-worker"
        )
        self._local = threading.local()
        self._listener: psycopg.Connection[Any] | None = None
        # Where this worker's next claim starts scanning: the last run it claimed (created_at,
        # id). Dropped at each reap (runs re-queued then are older) and whenever a claim finds
        # nothing; the database scans from the start whenever the hint comes up short.
        self._after: tuple[str, str] | None = None

    # -- the worker's calls -------------------------------------------------------------------

    def reap(self, limit: int = 100) -> int:
        """Give runs whose worker died back to the queue (or fail them), and enqueue the
        scheduled slots that are due: every running worker keeps the schedules going."""
        reaped = int(self._one("reap_expired_runs", limit=limit) or 0)
        self._after = None
        try:
            schedules.tick(self._connection(), datetime.now(UTC))
        except psycopg.OperationalError:
            self.release()
            raise QueueUnavailable("lost the database connection") from None
        return reaped

    def finish_and_claim(
        self, finished: Sequence[Mapping[str, Any]], worker_id: str, lease_s: int, want: int
    ) -> list[Answer]:
        """Finish the runs that are done and claim (and start) up to `want` more: one
        statement each in the database (0021), one round trip and one commit here."""
        after_created, after_id = self._after or (None, None)
        answer = self._one(
            "finish_and_claim_runs",
            finished=Jsonb(list(finished)),
            worker_id=worker_id,
            lease_s=lease_s,
            want=want,
            after_created=after_created,
            after_id=after_id,
        )
        claims = list(answer["next"]) if answer else []
        if claims:
            self._after = (claims[-1]["created_at"], claims[-1]["run_id"])
        elif want:
            self._after = None
        return claims

    def heartbeat(self, run_id: str, token: str, lease_s: int) -> Answer:
        return dict(self._one("heartbeat_run", run_id=run_id, token=token, lease_s=lease_s))

    def append_logs(self, run_id: str, token: str, lines: Sequence[Mapping[str, Any]]) -> Answer:
        return dict(
            self._one("append_run_logs", run_id=run_id, token=token, lines=Jsonb(list(lines)))
        )

    def record_artifact(
        self,
        run_id: str,
        token: str,
        artifact: Mapping[str, Any],
        expires_at: datetime,
    ) -> Answer:
        return dict(
            self._one(
                "record_run_artifact", run_id=run_id, token=token, expires_at=expires_at, **artifact
            )
        )

    def finish(self, run_id: str, token: str, exit_code: int, error: str | None) -> Answer:
        return dict(
            self._one("finish_run", run_id=run_id, token=token, exit_code=exit_code, error=error)
        )

    def tool_image(self, name: str, version: str) -> str | None:
        image = self._one("tool_image", tool_name=name, version=version)
        return str(image) if image else None

    def wait(self, timeout_s: float) -> None:
        """Until a run is queued (NOTIFY ops_runs) or the timeout passes."""
        try:
            if self._listener is None or self._listener.closed:
                self._listener = psycopg.connect(self.conninfo, autocommit=True)
                self._listener.execute(query("listen_runs"))
            for _ in self._listener.notifies(timeout=timeout_s, stop_after=1):
                pass
        except psycopg.OperationalError:
            self._close_listener()
            raise QueueUnavailable("lost the database connection") from None

    def release(self) -> None:
        """Close this thread's connection (a run's thread, when the run is over)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self.release()
        self._close_listener()

    # -- plumbing -------------------------------------------------------------------------

    def _one(self, query_name: str, **params: Any) -> Any:
        try:
            row = self._connection().execute(query(query_name), params).fetchone()
        except psycopg.OperationalError:
            self.release()
            raise QueueUnavailable("lost the database connection") from None
        return row[0] if row else None

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            self._local.conn = conn
        return conn

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener = None
