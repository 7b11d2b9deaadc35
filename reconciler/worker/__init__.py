"""`reconcile worker`: claim queued runs, execute their steps, stream logs, store artifacts.

The parts (docs/reference.md, "Workers"): `loop` (claim/finish round trips, one loop for any
concurrency), `lease` (heartbeat, cancel, lost lease), `run` (one run's folder, checkout,
steps, artifacts), `step` (one process, its output), `output` (encoding and masking of log
lines), `logs` (batches), `artifacts`, `executors` (sandboxed process or container),
`secrets`, `claim` (the typed record of a claim) and `queue` (the queue's interface and an
in-memory queue). The database side is reconciler.db.run_queue; psycopg stays there.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.db.embedded import default_state_dir
from reconciler.db.run_queue import PostgresRunQueue
from reconciler.worker.executors import (
    ContainerExecutor,
    ExecutorKind,
    ProcessExecutor,
    container_executor,
)
from reconciler.worker.loop import Loop, Say, WorkerOptions
from reconciler.worker.queue import RunQueue
from reconciler.worker.run import Checkout, RunEnvironment
from reconciler.worker.secrets import SecretStore

__all__ = ["ExecutorKind", "Setup", "Worker", "WorkerOptions", "hidden_paths"]


def hidden_paths(extra: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """The worker's own folders and files a step must not see (covered in its sandbox)."""
    home = Path.home()
    paths = [
        home,
        Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state"),
        Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache"),
        Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config"),
        default_state_dir(),  # the embedded server's data, the mirrors (as root: /var/lib/...)
        *(
            Path(os.environ[v])
            for v in ("RECONCILE_STATE_DIR", "RECONCILE_CACHE_DIR")
            if v in os.environ
        ),
        *extra,
    ]
    return tuple(dict.fromkeys(p.resolve() for p in paths if str(p) not in ("", "/")))


@dataclass(frozen=True)
class Setup:
    """How the operator set the worker up (reconcile worker's options)."""

    executor: ExecutorKind | None = None  # None: podman or docker if found, when needed
    secrets: SecretStore = field(default_factory=SecretStore)
    checkout: Checkout | None = None
    hidden: tuple[Path, ...] = ()  # more paths to hide from steps (the secrets file)
    say: Say | None = None


class Worker:
    """A worker on the PostgreSQL queue at `url` (tests may pass another RunQueue)."""

    def __init__(
        self,
        url: str | RunQueue,
        options: WorkerOptions,
        setup: Setup | None = None,
    ) -> None:
        setup = setup or Setup()
        executor = setup.executor
        self.queue: RunQueue = PostgresRunQueue(url) if isinstance(url, str) else url
        artifacts_dir = options.artifacts_dir.resolve()
        process = ProcessExecutor(hidden=hidden_paths((artifacts_dir, *setup.hidden)))

        @functools.cache
        def containers() -> ContainerExecutor | None:
            return None if executor is ExecutorKind.PROCESS else container_executor(executor)

        self.environment = RunEnvironment(
            artifacts_dir=artifacts_dir,
            process=process,
            containers=containers,
            checkout=setup.checkout,
            secrets=setup.secrets,
            max_output_bytes=options.max_output_bytes,
            artifact_ttl=options.artifact_ttl,
        )
        self.loop = Loop(self.queue, options, self.environment, setup.say)
        self.options = options

    def check(self) -> None:
        """ExecutorError unless steps can be isolated on this host (and the container
        runtime asked for answers)."""
        self.environment.process.check()
        self.environment.containers()

    def run(self) -> int:
        return self.loop.run()
