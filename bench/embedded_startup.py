"""Time the embedded PostgreSQL: first start (initdb + start + create + migrate) and later ones.

    .venv/bin/python bench/embedded_startup.py [--runs 5]

Each figure is one `reconcile db status` in a fresh process, as a user would run it, in a
fresh state directory; the server is stopped by its watchdog between runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_status(state_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["RECONCILE_STATE_DIR"] = str(state_dir)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "reconciler", "db", "status"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def wait_stopped(state_dir: Path) -> None:
    while any(state_dir.glob("pg*/data/postmaster.pid")):
        time.sleep(0.01)


def timed_version() -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "reconciler", "--version"], check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    firsts, laters = [], []
    for _ in range(args.runs):
        state_dir = Path(tempfile.mkdtemp(prefix="ops-reconciler-bench-"))
        state_dir.chmod(0o755)
        try:
            firsts.append(timed_status(state_dir))
            wait_stopped(state_dir)
            laters.append(timed_status(state_dir))
            wait_stopped(state_dir)
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)
    baseline = statistics.median(timed_version() for _ in range(args.runs))
    print(f"baseline `reconcile --version` (Python start-up): {baseline:.2f} s")
    print(
        f"first use (initdb, start, migrate): median {statistics.median(firsts):.2f} s "
        f"(min {min(firsts):.2f}, max {max(firsts):.2f})"
    )
    print(
        f"later use (start, check, stop):     median {statistics.median(laters):.2f} s "
        f"(min {min(laters):.2f}, max {max(laters):.2f})"
    )


if __name__ == "__main__":
    main()
