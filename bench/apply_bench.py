"""The first apply (warm parse cache) of one or more `reconcile` executables against raw COPY
FROM of the same rows, alternated round by round on fresh databases of one server:

    .venv/bin/python -m bench.apply_bench [--projects 10000] [--rounds 3] [--cold] RECONCILE...
    (e.g. a checkout of the previous commit's .venv/bin/reconcile, then this one's)

--cold: each apply starts with an empty parse cache, and the floor is COPY FROM plus the parse
floor (bench/reconcile_bench.py), measured in the same round.

For each: wall clock, the CLI's CPU seconds, and the CPU seconds of the server processes that
served its database (polled from /proc: the server must run on this machine). On a machine
shared with other work, the wall clock moves with the load; the CPU seconds show which side
(client or server) did more work than the floor.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.reconcile_bench import (
    TreeMemory,
    copy_in,
    copy_out,
    drop_database,
    fresh_database,
    load_note,
    make_fleet,
    parse_floor,
)

TICK = os.sysconf("SC_CLK_TCK")
Sample = tuple[float, float, float, float]  # seconds, CLI CPU, server CPU, peak MiB


class ServerCpu:
    """CPU seconds of the server processes whose title names database `name`."""

    POLL_S = 0.05

    def __init__(self, name: str) -> None:
        self.name = f" {name} ".encode()
        self.seen: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll)

    def __enter__(self) -> ServerCpu:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _poll(self) -> None:
        while not self._done.wait(self.POLL_S):
            self._sample()

    def _sample(self) -> None:
        for proc in glob.glob("/proc/[0-9]*"):
            try:
                with open(f"{proc}/cmdline", "rb") as handle:
                    if self.name not in handle.read():
                        continue
                with open(f"{proc}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            self.seen[proc] = (int(fields[11]) + int(fields[12])) / TICK


def first_apply(reconcile: str, root: Path, cache: Path, admin: str, name: str) -> Sample:
    """`cache`: the parse cache's folder (a new one: a cold apply)."""
    url = fresh_database(admin, name)
    env = {**os.environ, "RECONCILE_CACHE_DIR": str(cache), "DATABASE_URL": url}
    try:
        with ServerCpu(name) as server:
            started = time.perf_counter()
            process = subprocess.Popen(
                [reconcile, "apply", "-C", str(root), "--yes"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            with TreeMemory(process.pid) as memory:
                _, status, usage = os.wait4(process.pid, 0)
            elapsed = time.perf_counter() - started
        if status:
            raise SystemExit(f"{reconcile} apply failed: {process.stderr.read()!r}")  # type: ignore[union-attr]
    finally:
        drop_database(admin, url)
    peak = max(memory.peak_kib, usage.ru_maxrss) / 1024
    return elapsed, usage.ru_utime + usage.ru_stime, server.seconds, peak


def copy_from(rows: dict[str, bytes], admin: str, name: str) -> Sample:
    url = fresh_database(admin, name)
    try:
        with ServerCpu(name) as server:
            elapsed = copy_in(url, rows)
    finally:
        drop_database(admin, url)
    return elapsed, 0.0, server.seconds, 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reconcile", nargs="+")
    parser.add_argument("--projects", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="an empty parse cache each time")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    if not args.database_url:
        raise SystemExit("--database-url or DATABASE_URL: a server on this machine")
    n, admin = args.projects, args.database_url
    with tempfile.TemporaryDirectory(prefix="apply-bench-") as work:
        root, cache = make_fleet(Path(work), n), Path(work) / "cache"
        seed = fresh_database(admin, f"apply_bench_{n}_seed")  # warms the parse cache
        subprocess.run(
            [args.reconcile[0], "apply", "-C", str(root), "--yes"],
            env={**os.environ, "RECONCILE_CACHE_DIR": str(cache), "DATABASE_URL": seed},
            check=True,
            capture_output=True,
        )
        _, rows = copy_out(seed)
        drop_database(admin, seed)
        results: dict[str, list[Sample]] = {name: [] for name in [*args.reconcile, "COPY FROM"]}
        for round_ in range(args.rounds):
            for number, reconcile in enumerate(args.reconcile):
                used = Path(work) / f"cold-{round_}-{number}" if args.cold else cache
                sample = first_apply(reconcile, root, used, admin, f"apply_bench_{n}")
                results[reconcile].append(sample)
            floor = copy_from(rows, admin, f"apply_bench_{n}_copy")
            if args.cold:  # the floor of a cold apply: the parse floor too
                floor = (floor[0] + parse_floor(root)[0], *floor[1:])
            results["COPY FROM"].append(floor)
            print(f"round {round_ + 1}: {load_note()}", flush=True)
            for name, samples in results.items():
                print(f"  {name}: {_cells(samples[-1])}", flush=True)
    floor = statistics.median(s[0] for s in results["COPY FROM"])
    what = "COPY FROM + parse floor" if args.cold else "COPY FROM"
    print(f"\nN={n:,}, medians of {args.rounds} rounds; {load_note()}")
    for name, samples in results.items():
        median = tuple(statistics.median(s[i] for s in samples) for i in range(4))
        print(f"  {name}: {_cells(median)}, {median[0] / floor:.2f}x {what}")


def _cells(sample: tuple[float, ...]) -> str:
    seconds, client, server, peak = sample
    return (
        f"{seconds:.2f} s, CLI CPU {client:.2f} s, server CPU {server:.2f} s, peak {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
