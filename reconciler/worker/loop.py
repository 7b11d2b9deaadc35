"""The worker's loop, one for any concurrency: each round trip to the queue finishes the runs
that are done and claims as many as there is room for (`finish_and_claim`), so a batch of
runs shares its commits. A claimed run with nothing to execute is finished in the next round
trip without a thread; every other run gets a thread and a heartbeat. Wake-ups come by
LISTEN/NOTIFY with polling as the fallback; the lapsed leases of dead workers are reaped every
half lease. SIGTERM: stop claiming, finish the runs in flight, then stop.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from reconciler.db.run_queue import QueueUnavailable
from reconciler.worker.claim import Claim, parse_claim
from reconciler.worker.lease import Heartbeat, Signals, retrying
from reconciler.worker.queue import RunQueue
from reconciler.worker.run import Run, RunEnvironment

Say = Callable[[str], None]


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


@dataclass(frozen=True)
class Finished:
    claim: Claim
    exit_code: int
    error: str | None
    lost: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "run_id": self.claim.run_id,
            "lease_token": self.claim.token,
            "exit_code": self.exit_code,
            "error": None if self.error is None else self.error.replace("\x00", "\\x00"),
        }


class Loop:
    def __init__(
        self,
        run_queue: RunQueue,
        options: WorkerOptions,
        environment: RunEnvironment,
        say: Say | None = None,
    ) -> None:
        self.queue, self.options, self.environment = run_queue, options, environment
        self.say: Say = say or (lambda _line: None)
        self.stopping = threading.Event()
        self._next_reap = 0.0
        self._done: queue.Queue[Finished] = queue.Queue()
        self._busy: dict[str, threading.Thread] = {}

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        finished: list[Finished] = []
        try:
            while True:
                room = 0 if self.stopping.is_set() else self.options.concurrency - len(self._busy)
                claims = self._finish_and_claim(finished, room) if finished or room > 0 else []
                finished = [f for c in claims if (f := self._start(c)) is not None]
                if claims or finished:
                    finished += self._drain(block=False)
                    continue
                if self._busy:
                    finished = self._drain(block=True)
                    continue
                if self.options.once or self.stopping.is_set():
                    return 0
                self._wait()
                finished = self._drain(block=False)
        finally:
            self.queue.close()

    def _on_sigterm(self, *_: object) -> None:
        self.say(f"worker {self.options.worker_id}: SIGTERM, finishing the runs in flight")
        self.stopping.set()

    def _finish_and_claim(self, finished: list[Finished], want: int) -> list[Claim]:
        payload = [f.payload() for f in finished if not f.lost]
        for item in finished:
            self.say(
                f"run {item.claim.run_id} {item.claim.workflow_path} #{item.claim.run_number}: "
                f"{'lease lost' if item.lost else 'finished'} exit {item.exit_code}"
                f"{': ' + item.error if item.error else ''}"
            )
        self._reap_if_due()
        answer = retrying(
            lambda: self.queue.finish_and_claim(
                payload, self.options.worker_id, self.options.lease_s, max(want, 0)
            ),
            self.stopping if not payload else threading.Event(),
        )
        return [parse_claim(raw) for raw in answer or []]

    def _start(self, claim: Claim) -> Finished | None:
        """A run with nothing to execute is done at once; others get a thread."""
        self.say(f"run {claim.run_id} {claim.workflow_path} #{claim.run_number}: taken")
        if not claim.config.has_work:
            return Finished(claim, 0, None)
        thread = threading.Thread(target=self._execute, args=(claim,), daemon=True)
        self._busy[claim.run_id] = thread
        thread.start()
        return None

    def _execute(self, claim: Claim) -> None:
        signals = Signals()
        try:
            with Heartbeat(self.queue, claim, self.options.lease_s, signals):
                code, error = Run(self.queue, claim, signals, self.environment).execute()
        except Exception as exc:  # never let one run take the worker down
            code, error = 1, f"the worker failed running this run: {type(exc).__name__}: {exc}"
        finally:
            self.queue.release()
        self._done.put(Finished(claim, code, error, lost=signals.lost.is_set()))

    def _drain(self, *, block: bool) -> list[Finished]:
        found: list[Finished] = []
        if block:
            try:
                found.append(self._done.get(timeout=self.options.poll_s))
            except queue.Empty:
                return found
        while True:
            try:
                found.append(self._done.get_nowait())
            except queue.Empty:
                break
        for item in found:
            self._busy.pop(item.claim.run_id).join()
        return found

    def _reap_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_reap:
            retrying(self.queue.reap, self.stopping)
            self._next_reap = now + self.options.lease_s / 2

    def _wait(self) -> None:
        try:
            self.queue.wait(self.options.poll_s)
        except QueueUnavailable:
            time.sleep(min(self.options.poll_s, 1.0))
