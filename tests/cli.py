"""Running the real `reconcile` command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def reconcile(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """`reconcile ARGS` with the environment given (DATABASE_URL removed unless in `env`)."""
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)
