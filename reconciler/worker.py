"""`reconcile worker`: claim queued runs, execute their steps, stream logs, store artifacts.

Every write for a run goes through the fenced database functions of migration 0010 with the
claim's lease token; heartbeats (on their own connection) extend the lease and bring
cancellations. A worker that loses its lease stops the steps and lets the run go. Wake-ups come
by LISTEN ops_runs, with polling as the fallback. SIGTERM: stop claiming, finish the current run.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import mimetypes
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from reconciler.db import secrets

STEP_TIMEOUT_S = 3600
LOG_BATCH_LINES = 500
LOG_FLUSH_S = 0.2
KILL_GRACE_S = 2.0
MAX_LOG_LINES = 100_000  # per step; the rest is counted, not stored


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    artifacts_dir: Path
    lease_s: int = 30
    poll_s: float = 5.0
    once: bool = False  # stop when the queue is empty
    concurrency: int = 1  # runs in flight at once
    max_output_bytes: int = 10 * 1024 * 1024
    artifact_ttl: timedelta = timedelta(days=30)


@dataclass
class Claim:
    run_id: str
    token: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Signals:
    """Between the heartbeat thread and the steps of one run."""

    done: threading.Event = field(default_factory=threading.Event)  # the run is over
    lost: threading.Event = field(default_factory=threading.Event)  # the lease is gone
    cancel: threading.Event = field(default_factory=threading.Event)  # someone canceled it


def hide_from_steps() -> None:
    """Steps run as the worker's user: a step could read /proc/<worker>/environ (its
    DATABASE_URL, password included) or attach to the worker and read its memory. A process
    that is not dumpable has both readable by root only (Linux; elsewhere nothing changes).
    What a step still finds is masked in the logs (`secrets.redact`); run workers as a user of
    their own, and steps as another, for more."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


_PR_SET_DUMPABLE = 4


class Worker:
    def __init__(self, conninfo: str, options: WorkerOptions) -> None:
        self.conninfo = conninfo
        self.options = options
        self.stopping = threading.Event()
        self._local = threading.local()  # one connection per thread (loop, heartbeat)
        self._next_reap = 0.0

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        listener = self._listener()
        if self.options.concurrency > 1:
            listener = self._run_pool(listener)
        while not self.stopping.is_set() and self.options.concurrency == 1:
            claim = self._call_retrying(self._claim)
            while claim is not None:  # each finish takes the next run in the same round trip
                claim = self.execute(claim)
            if self.options.once:
                break
            else:
                listener = self._wait(listener)
        if listener is not None:
            listener.close()
        self._drop_connection()
        return 0

    def _run_pool(self, listener: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
        """Up to `concurrency` runs in flight; each round trip finishes those done and claims
        as many as there is room for, so commits are shared by the runs of a batch."""
        busy: dict[str, threading.Thread] = {}
        done: queue.Queue[tuple[Claim, Signals, int, str | None]] = queue.Queue()
        while True:
            finished = _drain(done, block=bool(busy) and len(busy) >= self.options.concurrency)
            room = 0 if self.stopping.is_set() else self.options.concurrency - len(busy)
            room += len(finished)
            claims = self._finish_and_claim_many(finished, room) if finished or room else []
            for claim, *_ in finished:
                busy.pop(claim.run_id).join()
            for claim in claims:
                thread = threading.Thread(target=self._run_one, args=(claim, done), daemon=True)
                busy[claim.run_id] = thread
                thread.start()
            if claims or finished:
                continue
            if busy:
                finished = _drain(done, block=True, timeout=self.options.poll_s)
                for item in finished:
                    done.put(item)
                continue
            if self.options.once or self.stopping.is_set():
                return listener
            listener = self._wait(listener)

    def _run_one(
        self, claim: Claim, done: queue.Queue[tuple[Claim, Signals, int, str | None]]
    ) -> None:
        signals = Signals()
        try:
            exit_code, error = self._watched(claim, signals)
        finally:
            self._drop_connection()  # this thread's, used for logs and artifacts
        done.put((claim, signals, exit_code, error))

    def _finish_and_claim_many(
        self, finished: list[tuple[Claim, Signals, int, str | None]], want: int
    ) -> list[Claim]:
        payload = [
            {"run_id": c.run_id, "lease_token": c.token, "exit_code": code, "error": error}
            for c, signals, code, error in finished
            if not signals.lost.is_set()
        ]

        def call(conn: psycopg.Connection[Any]) -> list[Claim]:
            self._reap_if_due(conn)
            row = conn.execute(
                "select ops.finish_and_claim_runs(%s, %s, %s, %s)",
                (Jsonb(payload), self.options.worker_id, self.options.lease_s, want),
            ).fetchone()
            following = row[0]["next"] if row else []
            return [Claim(str(c["run_id"]), str(c["lease_token"]), c) for c in following]

        claims: list[Claim] | None = self._call_retrying(call)
        return claims or []

    def _listener(self) -> psycopg.Connection[Any] | None:
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            conn.execute("listen ops_runs")
            return conn
        except psycopg.OperationalError:
            return None  # polling still works; the next wait tries again

    def _wait(self, listener: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
        """Until a run is queued (NOTIFY) or the poll interval passes."""
        if listener is None:
            time.sleep(self.options.poll_s)
            return self._listener()
        try:
            for _ in listener.notifies(timeout=self.options.poll_s, stop_after=1):
                pass
            return listener
        except psycopg.OperationalError:
            listener.close()
            return self._listener()

    def _claim(self, conn: psycopg.Connection[Any]) -> Claim | None:
        """Claim the oldest queued run and mark it running, in one round trip."""
        self._reap_if_due(conn)
        row = conn.execute(
            "select ops.claim_run(%s, %s, true)", (self.options.worker_id, self.options.lease_s)
        ).fetchone()
        claim = row[0] if row else None
        if not claim:
            return None
        return Claim(str(claim["run_id"]), str(claim["lease_token"]), claim)

    def _reap_if_due(self, conn: psycopg.Connection[Any]) -> None:
        """Every half lease, give runs whose worker died back to the queue (or fail them)."""
        now = time.monotonic()
        if now >= self._next_reap:
            conn.execute("select ops.reap_expired_runs(100)")
            self._next_reap = now + self.options.lease_s / 2

    def _call_retrying(self, action: Any, give_up: threading.Event | None = None) -> Any:
        """`action(conn)` on this thread's connection, reconnecting to wait out a database
        restart; None once `give_up` is set (default: the worker is stopping) meanwhile."""
        stop = give_up or self.stopping
        delay = 0.2
        while True:
            try:
                return action(self._connection())
            except psycopg.OperationalError:
                self._drop_connection()
                if stop.is_set():
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    # -- one run ----------------------------------------------------------------------------

    def execute(self, claim: Claim) -> Claim | None:
        """Run it; return the next claimed run (taken as this one finished), if any."""
        signals = Signals()
        exit_code, error = self._watched(claim, signals)
        return self._finish(claim, signals, exit_code, error)

    def _watched(self, claim: Claim, signals: Signals) -> tuple[int, str | None]:
        """The steps and artifacts, with a heartbeat alongside; a run with nothing to
        execute is done at once and needs no heartbeat."""
        config = claim.context.get("config") or {}
        if not config.get("steps") and not config.get("artifacts"):
            return 0, None
        beat = threading.Thread(target=self._heartbeat, args=(claim, signals), daemon=True)
        beat.start()
        try:
            return self._steps_and_artifacts(claim, signals, config)
        finally:
            signals.done.set()
            beat.join(timeout=5)

    def _finish(
        self, claim: Claim, signals: Signals, exit_code: int, error: str | None
    ) -> Claim | None:
        """Finish the run (unless its lease is lost) and, unless stopping, claim the next."""
        if signals.lost.is_set():
            return None if self.stopping.is_set() else self._call_retrying(self._claim)
        if self.stopping.is_set():
            self._call_retrying(
                lambda c: c.execute(
                    "select ops.finish_run(%s, %s, %s, %s)",
                    (claim.run_id, claim.token, exit_code, error),
                ),
                signals.lost,
            )
            return None
        following: Claim | None = self._call_retrying(
            lambda c: self._finish_and_claim(c, claim, exit_code, error), signals.lost
        )
        return following

    def _finish_and_claim(
        self, conn: psycopg.Connection[Any], claim: Claim, exit_code: int, error: str | None
    ) -> Claim | None:
        self._reap_if_due(conn)
        row = conn.execute(
            "select ops.finish_and_claim_run(%s, %s, %s, %s, %s, %s)",
            (
                claim.run_id,
                claim.token,
                exit_code,
                error,
                self.options.worker_id,
                self.options.lease_s,
            ),
        ).fetchone()
        following = row[0]["next"] if row else None
        if not following:
            return None
        return Claim(str(following["run_id"]), str(following["lease_token"]), following)

    def _heartbeat(self, claim: Claim, signals: Signals) -> None:
        """Extend the lease every third of it; learn of cancellation and of a lost lease."""
        every = max(0.2, self.options.lease_s / 3)
        try:
            while not signals.done.wait(every):
                answer = self._call_retrying(
                    lambda c: c.execute(
                        "select ops.heartbeat_run(%s, %s, %s)",
                        (claim.run_id, claim.token, self.options.lease_s),
                    ).fetchone()[0],
                    signals.done,
                )
                if answer is not None and not answer.get("ok"):
                    signals.lost.set()
                    return
                if answer is not None and answer.get("cancel_requested"):
                    signals.cancel.set()
        finally:
            self._drop_connection()

    def _steps_and_artifacts(
        self, claim: Claim, signals: Signals, config: dict[str, Any]
    ) -> tuple[int, str | None]:
        timeout = int(config.get("timeout_s") or STEP_TIMEOUT_S)
        workdir = Path(tempfile.mkdtemp(prefix="ops-run-"))
        try:
            for number, step in enumerate(config.get("steps") or [], start=1):
                code, reason = Step(self, claim, signals, workdir, timeout).run(number, step)
                if code != 0:
                    return code, reason
            return self._artifacts(claim, workdir, config.get("artifacts") or [])
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _artifacts(
        self, claim: Claim, workdir: Path, patterns: list[str]
    ) -> tuple[int, str | None]:
        """Store the files matching each pattern, addressed by their artifact key."""
        for pattern in patterns:
            matches = sorted(
                p for p in glob.glob(str(workdir / pattern), recursive=True) if Path(p).is_file()
            )
            if not matches:
                return 1, f"artifact pattern {pattern!r} matched no file"
            for path in matches:
                answer = self._store(claim, workdir, Path(path))
                if not answer.get("ok"):
                    return 1, f"artifact {path}: {answer.get('error')}"
        return 0, None

    def _store(self, claim: Claim, workdir: Path, path: Path) -> dict[str, Any]:
        relative = path.relative_to(workdir).as_posix()
        key = f"{claim.context.get('project')}/{claim.context.get('run_number')}/{relative}"
        target = self.options.artifacts_dir / key
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("rb") as source, target.open("wb") as sink:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        expires = datetime.now(UTC) + self.options.artifact_ttl
        answer: dict[str, Any] = self._call_retrying(
            lambda c: c.execute(
                "select ops.record_run_artifact(%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    claim.run_id,
                    claim.token,
                    key,
                    target.resolve().as_uri(),
                    content_type,
                    target.stat().st_size,
                    f"sha256:{digest.hexdigest()}",
                    expires,
                ),
            ).fetchone()[0]
        )
        return answer or {"ok": False, "error": "the worker is stopping"}

    def send_logs(self, claim: Claim, signals: Signals, lines: list[dict[str, Any]]) -> None:
        if not lines or signals.lost.is_set():
            return
        answer = self._call_retrying(
            lambda c: c.execute(
                "select ops.append_run_logs(%s, %s, %s)", (claim.run_id, claim.token, Jsonb(lines))
            ).fetchone()[0],
            signals.lost,
        )
        if answer is not None and not answer.get("ok"):
            signals.lost.set()


class Step:
    """One shell command of a run: its own process group, output streamed to the logs."""

    def __init__(
        self, worker: Worker, claim: Claim, signals: Signals, workdir: Path, timeout_s: int
    ) -> None:
        self.worker, self.claim, self.signals = worker, claim, signals
        self.workdir, self.timeout_s = workdir, timeout_s
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output_bytes = 0

    def run(self, number: int, command: str) -> tuple[int, str | None]:
        self.worker.send_logs(
            self.claim,
            self.signals,
            [
                {
                    "level": "info",
                    "message": secrets.redact(f"$ {command}"),
                    "metadata": {"step": number},
                }
            ],
        )
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=self.workdir,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with process:  # closes the pipe and reaps the process, whatever happens
            reader = threading.Thread(target=self._read, args=(process,), daemon=True)
            reader.start()
            reason = self._supervise(process, number)
            reader.join(timeout=5)
            self._flush(number, final=True)
        code = process.returncode
        limit = self.worker.options.max_output_bytes
        if reason is None and self.output_bytes > limit:  # the reader stopped it
            reason = f"output exceeded {limit // (1024 * 1024)} MB; the step was stopped"
        if reason is None and code != 0:
            reason = f"step {number} `{command}` exited with code {code}{_hint(code)}"
        return (code or 1, reason) if reason else (0, None)

    def _environment(self) -> dict[str, str]:
        context = self.claim.context
        metadata = context.get("metadata") or {}
        return {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")},
            "OPS_RUN_ID": self.claim.run_id,
            "OPS_RUN_NUMBER": str(context.get("run_number")),
            "OPS_ATTEMPT": str(context.get("attempt")),
            "OPS_PROJECT": str(context.get("project")),
            "OPS_WORKFLOW": f"{context.get('project')}/{context.get('type')}/"
            f"{context.get('workflow')}",
            "OPS_WORKFLOW_TYPE": str(context.get("type")),
            "OPS_COMMIT": str(metadata.get("commit") or ""),
            "OPS_REF": str(metadata.get("ref") or ""),
        }

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        """Read the output in chunks; queue its lines up to MAX_LOG_LINES; stop the step at
        once when it passes max_output_bytes (a step printing 100 MB must not stall us)."""
        assert process.stdout is not None
        limit, pending, kept = self.worker.options.max_output_bytes, b"", 0
        while chunk := os.read(process.stdout.fileno(), 1 << 16):
            self.output_bytes += len(chunk)
            if self.output_bytes > limit:
                _signal_group(process, signal.SIGKILL)
                continue  # drain what is left without keeping it
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                kept += 1
                if kept <= MAX_LOG_LINES:
                    self.lines.put(raw.decode("utf-8", errors="replace"))
        if pending and self.output_bytes <= limit and kept < MAX_LOG_LINES:
            self.lines.put(pending.decode("utf-8", errors="replace"))
        if kept > MAX_LOG_LINES:
            self.lines.put(f"... {kept - MAX_LOG_LINES} more line(s) not stored")
        self.lines.put(None)

    def _supervise(self, process: subprocess.Popen[bytes], number: int) -> str | None:
        deadline = time.monotonic() + self.timeout_s
        while process.poll() is None:
            self._flush(number)
            why = self._why_stop(deadline)
            if why:
                _kill_group(process)
                return why
            time.sleep(LOG_FLUSH_S)
        return None

    def _why_stop(self, deadline: float) -> str | None:
        if self.signals.cancel.is_set():
            return "canceled"
        if self.signals.lost.is_set():
            return "lease lost"
        if time.monotonic() > deadline:
            return f"timed out after {self.timeout_s} s"
        limit = self.worker.options.max_output_bytes
        if self.output_bytes > limit:
            return f"output exceeded {limit // (1024 * 1024)} MB; the step was stopped"
        return None

    def _flush(self, number: int, *, final: bool = False) -> None:
        """Send the lines read so far, in batches; `final`: until the output has ended."""
        while True:
            batch: list[dict[str, Any]] = []
            ended = False
            while len(batch) < LOG_BATCH_LINES:
                try:
                    line = self.lines.get(timeout=0.5 if final else 0)
                except queue.Empty:
                    break
                if line is None:
                    ended = True
                    break
                # a step may print what it can find of the worker's secrets: never stored
                message = secrets.redact(line)
                batch.append({"level": "info", "message": message, "metadata": {"step": number}})
            self.worker.send_logs(self.claim, self.signals, batch)
            if not final or ended or not batch:
                return


def _drain(items: queue.Queue[Any], *, block: bool, timeout: float | None = None) -> list[Any]:
    """Everything in the queue; when `block`, wait for at least one (or the timeout)."""
    found = []
    if block:
        try:
            found.append(items.get(timeout=timeout))
        except queue.Empty:
            return found
    while True:
        try:
            found.append(items.get_nowait())
        except queue.Empty:
            return found


def _signal_group(process: subprocess.Popen[bytes], number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, number)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def _hint(code: int) -> str:
    return {126: " (not executable)", 127: " (command not found)"}.get(code, "")
