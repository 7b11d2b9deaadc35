"""A run's lease: a heartbeat thread extends it every third of the lease and learns of a
cancellation or of a lost lease (then the steps are stopped and the run is let go)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from reconciler.db.run_queue import QueueUnavailable
from reconciler.worker.claim import Claim
from reconciler.worker.queue import RunQueue

T = TypeVar("T")


@dataclass
class Signals:
    """Between the heartbeat thread and the steps of one run."""

    done: threading.Event = field(default_factory=threading.Event)  # the run is over
    lost: threading.Event = field(default_factory=threading.Event)  # the lease is gone
    cancel: threading.Event = field(default_factory=threading.Event)  # someone canceled it


def retrying(action: Callable[[], T], give_up: threading.Event) -> T | None:
    """`action()`, waiting out a database restart; None once `give_up` is set meanwhile."""
    delay = 0.2
    while True:
        try:
            return action()
        except QueueUnavailable:
            if give_up.is_set():
                return None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Heartbeat:
    def __init__(self, queue: RunQueue, claim: Claim, lease_s: int, signals: Signals) -> None:
        self.queue, self.claim, self.lease_s, self.signals = queue, claim, lease_s, signals
        self.thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def __enter__(self) -> Signals:
        self.thread.start()
        return self.signals

    def __exit__(self, *_: object) -> None:
        self.signals.done.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        every = max(0.2, self.lease_s / 3)
        claim = self.claim
        try:
            while not self.signals.done.wait(every):
                answer = retrying(
                    lambda: self.queue.heartbeat(claim.run_id, claim.token, self.lease_s),
                    self.signals.done,
                )
                if answer is not None and not answer.get("ok"):
                    self.signals.lost.set()
                    return
                if answer is not None and answer.get("cancel_requested"):
                    self.signals.cancel.set()
        finally:
            self.queue.release()
