"""What the worker needs of a run queue, and an in-memory queue with the same rules (leases,
fencing tokens, cancellation) so the lease and step logic is unit-tested without a server.
The real one is reconciler.db.run_queue.PostgresRunQueue; the database tests use it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

Answer = dict[str, Any]
LOST: Answer = {"ok": False, "error": "lease lost"}


class RunQueue(Protocol):
    def reap(self, limit: int = 100) -> int: ...

    def finish_and_claim(
        self, finished: Sequence[Mapping[str, Any]], worker_id: str, lease_s: int, want: int
    ) -> list[Answer]: ...

    def heartbeat(self, run_id: str, token: str, lease_s: int) -> Answer: ...

    def append_logs(
        self, run_id: str, token: str, lines: Sequence[Mapping[str, Any]]
    ) -> Answer: ...

    def record_artifact(
        self, run_id: str, token: str, artifact: Mapping[str, Any], expires_at: datetime
    ) -> Answer: ...

    def finish(self, run_id: str, token: str, exit_code: int, error: str | None) -> Answer: ...

    def tool_image(self, name: str, version: str) -> str | None: ...

    def wait(self, timeout_s: float) -> None: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class MemoryRun:
    run_id: str
    config: Any  # what members wrote: not necessarily a mapping
    metadata: Any = field(default_factory=dict)
    project: str = "demo"
    workflow: str = "job"
    workflow_type: str = "build"
    status: str = "queued"
    attempt: int = 0
    max_attempts: int = 3
    token: str | None = None
    expires: float = 0.0
    cancel_requested: bool = False
    exit_code: int | None = None
    error: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    claimed_by: list[str] = field(default_factory=list)


class InMemoryQueue:
    """Runs in a dict under one lock; the same answers as the SQL functions of 0010."""

    def __init__(self, tools: Mapping[tuple[str, str], str] | None = None) -> None:
        self.runs: dict[str, MemoryRun] = {}
        self.tools = dict(tools or {})
        self.lock = threading.Lock()
        self.queued = threading.Condition(self.lock)

    def add(self, config: Any, **fields: Any) -> MemoryRun:
        run = MemoryRun(str(uuid.uuid4()), config, **fields)
        with self.lock:
            self.runs[run.run_id] = run
            self.queued.notify_all()
        return run

    def cancel(self, run_id: str) -> None:
        with self.lock:
            run = self.runs[run_id]
            if run.status == "queued":
                run.status = "canceled"
            else:
                run.cancel_requested = True

    def reap(self, limit: int = 100) -> int:
        now, moved = time.monotonic(), 0
        with self.lock:
            for run in self.runs.values():
                if run.status == "running" and run.expires <= now and moved < limit:
                    run.status = "queued" if run.attempt < run.max_attempts else "failed"
                    moved += 1
        return moved

    def finish_and_claim(
        self, finished: Sequence[Mapping[str, Any]], worker_id: str, lease_s: int, want: int
    ) -> list[Answer]:
        for done in finished:
            self.finish(done["run_id"], done["lease_token"], done["exit_code"], done["error"])
        claims: list[Answer] = []
        with self.lock:
            for run in self.runs.values():
                if len(claims) >= want:
                    break
                if run.status == "queued":
                    claims.append(self._claim(run, worker_id, lease_s))
        return claims

    def _claim(self, run: MemoryRun, worker_id: str, lease_s: int) -> Answer:
        run.status, run.attempt, run.token = "running", run.attempt + 1, str(uuid.uuid4())
        run.expires = time.monotonic() + lease_s
        run.claimed_by.append(worker_id)
        return {
            "run_id": run.run_id,
            "lease_token": run.token,
            "run_number": list(self.runs).index(run.run_id) + 1,
            "attempt": run.attempt,
            "project": run.project,
            "type": run.workflow_type,
            "workflow": run.workflow,
            "metadata": run.metadata,
            "config": run.config,
        }

    def _leased(self, run_id: str, token: str) -> MemoryRun | None:
        run = self.runs.get(run_id)
        if run is None or run.token != token or run.status != "running":
            return None
        return run if run.expires > time.monotonic() else None

    def heartbeat(self, run_id: str, token: str, lease_s: int) -> Answer:
        with self.lock:
            run = self._leased(run_id, token)
            if run is None:
                return dict(LOST)
            run.expires = time.monotonic() + lease_s
            return {"ok": True, "cancel_requested": run.cancel_requested}

    def append_logs(self, run_id: str, token: str, lines: Sequence[Mapping[str, Any]]) -> Answer:
        with self.lock:
            run = self._leased(run_id, token)
            if run is None:
                return dict(LOST)
            for line in lines:
                if "\x00" in str(line.get("message", "")):
                    raise ValueError("text cannot hold NUL (as PostgreSQL's jsonb)")
            run.logs.extend(dict(line) for line in lines)
            return {"ok": True, "count": len(lines)}

    def record_artifact(
        self, run_id: str, token: str, artifact: Mapping[str, Any], expires_at: datetime
    ) -> Answer:
        with self.lock:
            run = self._leased(run_id, token)
            if run is None:
                return dict(LOST)
            run.artifacts.append(dict(artifact))
            return {"ok": True}

    def finish(self, run_id: str, token: str, exit_code: int, error: str | None) -> Answer:
        with self.lock:
            run = self._leased(run_id, token)
            if run is None:
                return dict(LOST)
            status = "canceled" if run.cancel_requested else "succeeded" if exit_code == 0 else ""
            run.status = status or "failed"
            run.exit_code, run.error = exit_code, error
            return {"ok": True, "status": run.status}

    def tool_image(self, name: str, version: str) -> str | None:
        return self.tools.get((name, version))

    def wait(self, timeout_s: float) -> None:
        with self.queued:
            self.queued.wait(timeout_s)

    def release(self) -> None:
        return None

    def close(self) -> None:
        return None
