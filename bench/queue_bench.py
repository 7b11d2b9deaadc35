"""The queue against pgqueuer, on one server, in one run (issue 12).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.queue_bench [--runs 50000] [--repeat 3] [--database-url URL]
    .venv/bin/python -m bench.queue_bench --quick        (5,000 runs, 1 repeat: a few seconds)

What is measured, alternating the contenders in every round (A/B/C, then B/C/A, ...), medians:

* ours: N no-op runs queued in one INSERT (a workflow with no steps and no artifacts: nothing
  to check out or execute), in a database with every migration (needs, lanes, the state
  machine's triggers), drained by W `reconcile worker --once` processes with C runs in
  flight each. Every run goes queued -> claimed -> running -> succeeded through the state
  machine and writes its three state_change events; the bench checks both at the end.
* pgqueuer, best: its own benchmark's recommended setup: asyncpg driver, uvloop, 5 dequeuers
  (one connection and one PgQueuer each), batch size 25, drain mode; N no-op jobs queued in one
  batch. Its tables are logged (its default `durable` durability); neither side turns off
  synchronous_commit.
* pgqueuer, default: one PgQueuer on one asyncpg connection, its default batch size, asyncio.
* idle claim latency: one idle worker (LISTEN); runs queued one at a time, 20 ms apart;
  claimed_at - created_at, p50 and p99.

Each contender is timed from the moment its consumers are connected and ready to the moment
the queue is empty (ours: every run final), so process start-up is not counted for either.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path

import psycopg

from bench.reconcile_bench import fresh_database, server
from bench.worker_bench import drain_worker, enqueue
from reconciler.worker import Worker, WorkerOptions

Contender = Callable[[str, int], float]


def _worker(url: str, name: str, concurrency: int, ready: Event, go: Event) -> None:
    worker = drain_worker(url, name, concurrency)
    worker.queue.reap()  # connected (and the reaper's first pass done) before the clock starts
    ready.set()
    go.wait()
    worker.run()


def ours(admin: str, runs: int, workers: int, concurrency: int) -> float:
    url = fresh_database(admin, "bench_queue_ours")
    enqueue(url, runs)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze ops.runs")
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    readies = [context.Event() for _ in range(workers)]
    processes = [
        context.Process(target=_worker, args=(url, f"w{i}", concurrency, readies[i], go))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for ready, process in zip(readies, processes, strict=True):
        while not ready.wait(1):
            assert process.is_alive(), f"worker {process.name} died before it was ready"
    started = time.perf_counter()
    go.set()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        done, events = conn.execute(
            "select (select count(*) from ops.runs where status = 'succeeded'), "
            "(select count(*) from ops.run_events where event_type = 'state_change')"
        ).fetchone()  # type: ignore[misc]
    assert done == runs, f"{done} of {runs} runs succeeded"
    assert events == 3 * runs, f"{events} state_change events for {runs} runs (expected 3 each)"
    return runs / elapsed


def pgqueuer(admin: str, jobs: int, *, dequeuers: int, batch: int | None, fast: bool) -> float:
    import asyncpg  # noqa: PLC0415
    import uvloop  # noqa: PLC0415
    from pgqueuer import AsyncpgDriver, PgQueuer, Queries  # noqa: PLC0415
    from pgqueuer.models import Job  # noqa: PLC0415
    from pgqueuer.types import QueueExecutionMode  # noqa: PLC0415

    url = fresh_database(admin, "bench_queue_pgqueuer")
    dsn = psycopg.conninfo.make_conninfo(url)

    async def drain() -> float:
        setup = await asyncpg.connect(dsn=_uri(dsn))
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        await queries.enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)
        await setup.execute("vacuum analyze pgqueuer")
        consumers, connections = [], []
        for _ in range(dequeuers):
            connections.append(await asyncpg.connect(dsn=_uri(dsn)))
            pgq = PgQueuer(AsyncpgDriver(connections[-1]))

            @pgq.entrypoint("noop")
            async def noop(_job: Job) -> None:
                return None

            consumers.append(pgq)
        kwargs = {} if batch is None else {"batch_size": batch}
        started = time.perf_counter()
        await asyncio.gather(
            *(pgq.run(mode=QueueExecutionMode.drain, **kwargs) for pgq in consumers)  # type: ignore[arg-type]
        )
        elapsed = time.perf_counter() - started
        left = await setup.fetchval("select count(*) from pgqueuer")
        assert left == 0, f"{left} pgqueuer jobs left"
        await setup.close()
        for connection in connections:
            await connection.close()
        return jobs / elapsed

    return uvloop.run(drain()) if fast else asyncio.run(drain())


def _uri(conninfo: str) -> str:
    """asyncpg takes a URI, not libpq's key=value form."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    user, host = parts.get("user", "postgres"), parts.get("host", "127.0.0.1")
    password = f":{parts['password']}" if parts.get("password") else ""
    if str(host).startswith("/"):
        return f"postgresql://{user}{password}@/{parts['dbname']}?host={host}&port={parts.get('port', 5432)}"
    return f"postgresql://{user}{password}@{host}:{parts.get('port', 5432)}/{parts['dbname']}"


def claim_latency(admin: str, samples: int) -> tuple[float, float]:
    """p50 and p99 (ms) from a run's insert to its claim, with one idle worker listening."""
    url = fresh_database(admin, "bench_queue_latency")
    enqueue(url, 0)
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    go.set()
    idle = context.Process(target=_idle_worker, args=(url, ready))
    idle.start()
    while not ready.wait(1):
        assert idle.is_alive(), "the idle worker died before it was ready"
    time.sleep(0.5)  # listening
    with psycopg.connect(url, autocommit=True) as conn:
        workflow, project = conn.execute(
            "select id, project_id from ops.workflows limit 1"
        ).fetchone()  # type: ignore[misc]
        for _ in range(samples):
            conn.execute(
                "insert into ops.runs (project_id, workflow_id) values (%s, %s)",
                (project, workflow),
            )
            time.sleep(0.02)
    time.sleep(0.5)
    idle.terminate()
    idle.join()
    with psycopg.connect(url) as conn:
        delays = [
            float(row[0]) * 1000
            for row in conn.execute(
                "select extract(epoch from claimed_at - created_at) from ops.runs "
                "where claimed_at is not null"
            )
        ]
    assert len(delays) == samples, f"{len(delays)} of {samples} runs claimed"
    quantiles = statistics.quantiles(delays, n=100)
    return quantiles[49], quantiles[98]


def _idle_worker(url: str, ready: Event) -> None:
    options = WorkerOptions(
        worker_id="idle", artifacts_dir=Path(tempfile.gettempdir()), lease_s=30, poll_s=5.0
    )
    worker = Worker(url, options)
    worker.queue.reap()
    ready.set()
    worker.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="our worker processes")
    parser.add_argument("--concurrency", type=int, default=64, help="our runs in flight each")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="5,000 runs, 1 round")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--latency-only", action="store_true", help="only the idle claim latency")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.repeat, args.latency_samples = 5_000, 1, 100
    contenders: dict[str, Contender] = {
        f"ops-reconciler ({args.workers} workers x {args.concurrency} in flight)": (
            lambda admin, n: ours(admin, n, args.workers, args.concurrency)
        ),
        "pgqueuer best (asyncpg, uvloop, 5 dequeuers, batch 25)": (
            lambda admin, n: pgqueuer(admin, n, dequeuers=5, batch=25, fast=True)
        ),
        "pgqueuer default (asyncpg, 1 dequeuer, batch 10)": (
            lambda admin, n: pgqueuer(admin, n, dequeuers=1, batch=None, fast=False)
        ),
    }
    names = list(contenders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    with server(args.database_url) as admin:
        if args.latency_only:
            p50, p99 = claim_latency(admin, args.latency_samples)
            print(f"idle claim latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            return
        for round_ in range(args.repeat):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                rate = contenders[name](admin, args.runs)
                rates[name].append(rate)
                print(f"round {round_ + 1}: {name}: {rate:,.0f} runs/s", flush=True)
        p50, p99 = claim_latency(admin, args.latency_samples)
    ours_rate = statistics.median(rates[names[0]])
    print(f"\n{args.runs:,} queued no-op runs, median of {args.repeat} rounds, alternated:\n")
    print("| queue | runs/s drained | ours against it |")
    print("|---|---:|---:|")
    for name in names:
        median = statistics.median(rates[name])
        print(f"| {name} | {median:,.0f} | {ours_rate / median:.2f}x |")
    print(
        f"\nIdle claim latency (insert to claim, one idle worker, {args.latency_samples} runs): "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


if __name__ == "__main__":
    main()
