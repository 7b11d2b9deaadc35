"""Log batching: lines from a step's readers go out in batches of LOG_BATCH_LINES through
the fenced `append_logs`; a refused batch means the lease is lost."""

from __future__ import annotations

import queue
from typing import Any

from reconciler.worker.claim import Claim
from reconciler.worker.lease import Signals, retrying
from reconciler.worker.queue import RunQueue

LOG_BATCH_LINES = 500
Line = dict[str, Any]


class RunLog:
    """The log of one run: `put` from any thread, `flush` from the run's thread."""

    def __init__(self, run_queue: RunQueue, claim: Claim, signals: Signals) -> None:
        self.queue, self.claim, self.signals = run_queue, claim, signals
        self.lines: queue.Queue[Line] = queue.Queue()

    def put(self, message: str, **metadata: Any) -> None:
        message = message.replace("\x00", "\\x00")  # the worker's own lines: never a NUL
        self.lines.put({"level": "info", "message": message, "metadata": metadata})

    def flush(self) -> None:
        while True:
            batch: list[Line] = []
            while len(batch) < LOG_BATCH_LINES:
                try:
                    batch.append(self.lines.get_nowait())
                except queue.Empty:
                    break
            self.send(batch)
            if len(batch) < LOG_BATCH_LINES:
                return

    def send(self, batch: list[Line]) -> None:
        if not batch or self.signals.lost.is_set():
            return
        claim = self.claim
        answer = retrying(
            lambda: self.queue.append_logs(claim.run_id, claim.token, batch), self.signals.lost
        )
        if answer is not None and not answer.get("ok"):
            self.signals.lost.set()
