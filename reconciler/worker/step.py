"""One step: a shell command started through its executor, stdout and stderr read in chunks
into masked, encoded log lines (their stream kept), stopped on cancel, lost lease, timeout or
too much output. A container step also gets a sentinel that removes the container if the
worker dies (see executors.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from reconciler.worker.executors import ContainerExecutor, StepLaunch
from reconciler.worker.lease import Signals
from reconciler.worker.logs import RunLog
from reconciler.worker.output import LineSplitter, Masker, encode_line

LOG_FLUSH_S = 0.2
KILL_GRACE_S = 2.0
MAX_LOG_LINES = 100_000  # per step; the rest is counted, not stored
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class StepLimits:
    timeout_s: int
    max_output_bytes: int


@dataclass
class Counters:
    output_bytes: int = 0
    lines: int = 0


class Step:
    def __init__(
        self,
        log: RunLog,
        signals: Signals,
        masker: Masker,
        limits: StepLimits,
        container: ContainerExecutor | None = None,
    ) -> None:
        self.log, self.signals, self.masker, self.limits = log, signals, masker, limits
        self.container = container
        self.counters = Counters()
        self.count_lock = threading.Lock()

    def run(
        self, number: int, command: str, launch: StepLaunch, cwd: Path
    ) -> tuple[int, str | None]:
        self.log.put(f"$ {self.masker.mask_text(command)}", step=number, stream="worker")
        process = subprocess.Popen(
            launch.argv,
            cwd=cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        sentinel = _sentinel(self.container, launch.container)
        with process:
            readers = [
                threading.Thread(target=self._read, args=(process, pipe, name, number), daemon=True)
                for pipe, name in ((process.stdout, "stdout"), (process.stderr, "stderr"))
            ]
            for reader in readers:
                reader.start()
            reason = self._supervise(process)
            for reader in readers:
                reader.join(timeout=5)
        _dismiss(sentinel, self.container, launch.container, killed=reason is not None)
        self._account(number)
        self.log.flush()
        return self._outcome(process.returncode, reason, number, command)

    def _outcome(
        self, code: int, reason: str | None, number: int, command: str
    ) -> tuple[int, str | None]:
        limit = self.limits.max_output_bytes
        if reason is None and self.counters.output_bytes > limit:  # a reader stopped it
            reason = _too_much(limit)
        if reason is None and code != 0:
            reason = (
                f"step {number} `{self.masker.mask_text(command)}` exited with code {code}"
                f"{_hint(code)}"
            )
        return (code or 1, reason) if reason else (0, None)

    def _read(
        self, process: subprocess.Popen[bytes], pipe: IO[bytes] | None, stream: str, number: int
    ) -> None:
        """Chunks in, lines out; past max_output_bytes the step is killed and the rest drained."""
        assert pipe is not None
        splitter = LineSplitter(self.masker)
        limit = self.limits.max_output_bytes
        while chunk := os.read(pipe.fileno(), 1 << 16):
            with self.count_lock:
                self.counters.output_bytes += len(chunk)
                over = self.counters.output_bytes > limit
            if over:
                _signal_group(process, signal.SIGKILL)
                continue
            self._keep(splitter.feed(chunk), stream, number)
        with self.count_lock:
            over = self.counters.output_bytes > limit
        if not over:
            self._keep(splitter.close(), stream, number)

    def _keep(self, pieces: object, stream: str, number: int) -> None:
        for raw, continued in pieces:  # type: ignore[attr-defined]
            with self.count_lock:
                self.counters.lines += 1
                if self.counters.lines > MAX_LOG_LINES:
                    continue
            text, escaped = encode_line(raw)
            metadata: dict[str, object] = {"step": number, "stream": stream}
            if escaped:
                metadata["encoding"] = "escaped"
            if continued:
                metadata["continued"] = True
            self.log.put(text, **metadata)

    def _account(self, number: int) -> None:
        extra = self.counters.lines - MAX_LOG_LINES
        if extra > 0:
            self.log.put(f"... {extra} more line(s) not stored", step=number, stream="worker")

    def _supervise(self, process: subprocess.Popen[bytes]) -> str | None:
        deadline = time.monotonic() + self.limits.timeout_s
        while process.poll() is None:
            self.log.flush()
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
            return f"timed out after {self.limits.timeout_s} s"
        if self.counters.output_bytes > self.limits.max_output_bytes:
            return _too_much(self.limits.max_output_bytes)
        return None


def _sentinel(
    container: ContainerExecutor | None, name: str | None
) -> tuple[subprocess.Popen[bytes], int] | None:
    """A process that removes the container once the worker is gone: it reads a pipe whose
    only writer is the worker; end of file without `done` means the worker died."""
    if container is None or name is None:
        return None
    read_end, write_end = os.pipe()
    remove = " ".join(container.remove_argv(name))
    process = subprocess.Popen(
        ["/bin/sh", "-c", f'read -r word; [ "$word" = done ] || exec {remove} >/dev/null 2>&1'],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(read_end)
    return process, write_end


def _dismiss(
    sentinel: tuple[subprocess.Popen[bytes], int] | None,
    container: ContainerExecutor | None,
    name: str | None,
    *,
    killed: bool,
) -> None:
    if sentinel is None or container is None or name is None:
        return
    process, write_end = sentinel
    if killed:  # the client was killed; the container may still run
        subprocess.run(container.remove_argv(name), capture_output=True, check=False)
    with contextlib.suppress(OSError):
        os.write(write_end, b"done\n")
    os.close(write_end)
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, number)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """TERM to the step's group, KILL after the grace period (the sandbox's first process
    dying takes the whole PID namespace with it)."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _too_much(limit: int) -> str:
    return f"output exceeded {limit // (1024 * 1024)} MB; the step was stopped"


def _hint(code: int) -> str:
    return {126: " (not executable)", 127: " (command not found)"}.get(code, "")
