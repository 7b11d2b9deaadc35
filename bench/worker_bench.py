"""Workers: lifecycle throughput, claim latency, and pgqueuer as the peer, on one server.

    .venv/bin/python -m bench.worker_bench [--runs 10000] [--workers 1 4 16] [--pipelines]
                                           [--database-url URL]   (pip install pgqueuer)

* lifecycle: enqueue N no-op runs (one INSERT), then W `reconcile worker --once` processes
  (each with 1 or C runs in flight) claim, start and finish them (each move writing
  run_events); runs per second over the whole.
* claim latency: one idle worker waits (LISTEN, 5 s poll); 200 runs are enqueued one at a time;
  claimed_at - created_at, p50 and p99.
* pgqueuer: the same server, N no-op jobs enqueued in one batch, drained by one QueueManager.
* checkout: a run's code from a local mirror (reconciler.checkout.materialize) of a repository
  of 500 files: the first run on a host (the mirror fetched), then warm runs (no fetch).
* container start: one run of 10 `true` steps on the in-memory queue, as sandboxed processes and
  in a container (podman or docker, a busybox image built locally); the difference per step.
* pipelines (--pipelines): the same N no-op runs as build -> test -> deploy of N/3 projects
  (test needs build, deploy needs test and is in a `production` lane), against N plain runs,
  W workers that keep running until every run is final; runs per second of each, and the
  ratio (issue 10: within 20%).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from bench.reconcile_bench import fresh_database, server
from reconciler.worker import Worker, WorkerOptions


def drain_worker(url: str, name: str, concurrency: int) -> Worker:
    """A worker that drains the queue and stops (`once`), its artifacts in the temp folder."""
    options = WorkerOptions(
        worker_id=name,
        artifacts_dir=Path(tempfile.gettempdir()),
        once=True,
        lease_s=30,
        poll_s=0.2,
        concurrency=concurrency,
    )
    return Worker(url, options)


def work(url: str, name: str, concurrency: int) -> None:
    drain_worker(url, name, concurrency).run()


def enqueue(url: str, count: int) -> None:
    with psycopg.connect(url) as conn:
        project = conn.execute(
            "insert into ops.projects (workspace_key, slug, name, odoo_version) "
            "values ('bench', 'bench', 'Bench', '18.0') on conflict (slug) do update "
            "set name = excluded.name returning id"
        ).fetchone()[0]  # type: ignore[index]
        workflow = conn.execute(
            "insert into ops.workflows (project_id, workflow_type, name, config) "
            "values (%s, 'test', %s, %s) returning id",
            (project, f"noop-{time.monotonic_ns()}", Jsonb({"steps": []})),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "insert into ops.runs (project_id, workflow_id) "
            "select %s, %s from generate_series(1, %s)",
            (project, workflow, count),
        )


def lifecycle(admin: str, runs: int, workers: int, concurrency: int) -> float:
    url = fresh_database(admin, f"bench_workers_{workers}_{concurrency}")
    started = time.perf_counter()
    enqueue(url, runs)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=work, args=(url, f"w{i}", concurrency)) for i in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        done = conn.execute("select count(*) from ops.runs where status = 'succeeded'").fetchone()[
            0
        ]  # type: ignore[index]
    assert done == runs, f"{done} of {runs} runs succeeded"
    return runs / elapsed


def enqueue_pipelines(url: str, count: int) -> None:
    """count/3 projects, each with one commit through build -> test -> deploy (lane)."""
    projects = count // 3
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into ops.projects (workspace_key, slug, name, odoo_version) "
            "select 'pipe_' || i, 'pipe-' || i, 'Pipe ' || i, '18.0' "
            "from generate_series(1, %s) i",
            (projects,),
        )
        for kind, needs, lane in (
            ("build", [], None),
            ("test", ["build"], None),
            ("deploy", ["test"], "production"),
        ):
            conn.execute(
                "insert into ops.workflows (project_id, workflow_type, name, config, needs, "
                "concurrency) select id, %s, %s, %s, %s, %s from ops.projects "
                "where slug like 'pipe-%%'",
                (kind, kind, Jsonb({"steps": []}), needs, lane),
            )
        conn.execute(
            "insert into ops.runs (project_id, workflow_id, metadata) "
            "select w.project_id, w.id, jsonb_build_object('commit', md5(w.project_id::text)) "
            "from ops.workflows w join ops.projects p on p.id = w.project_id "
            "where p.slug like 'pipe-%%' "
            "order by array_position(array['build', 'test', 'deploy'], w.workflow_type)"
        )


def _forever(url: str, name: str) -> None:
    options = WorkerOptions(
        worker_id=name, artifacts_dir=Path(tempfile.gettempdir()), lease_s=30, poll_s=0.2
    )
    Worker(url, options).run()


def drained(admin: str, name: str, runs: int, workers: int, fill: object) -> float:
    """Runs per second until every run is final, with workers that wait for more."""
    url = fresh_database(admin, name)
    started = time.perf_counter()
    fill(url, runs)  # type: ignore[operator]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_forever, args=(url, f"w{i}")) for i in range(workers)]
    for process in processes:
        process.start()
    with psycopg.connect(url, autocommit=True) as conn:
        total = conn.execute("select count(*) from ops.runs").fetchone()[0]  # type: ignore[index]
        while (
            conn.execute(
                "select count(*) from ops.runs where status in ('succeeded', 'failed', 'canceled')"
            ).fetchone()[0]
            < total
        ):  # type: ignore[index]
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        bad = conn.execute("select count(*) from ops.runs where status <> 'succeeded'").fetchone()
    for process in processes:
        process.terminate()
        process.join()
    assert bad is not None and bad[0] == 0, f"{bad} runs did not succeed"
    return total / elapsed


def pipelines(admin: str, runs: int, workers: int) -> None:
    plain = drained(admin, f"bench_plain_{workers}", runs, workers, enqueue)
    piped = drained(admin, f"bench_pipes_{workers}", runs, workers, enqueue_pipelines)
    print(
        f"{workers:2} worker(s): plain {plain:,.0f} runs/s, with needs and lanes {piped:,.0f} "
        f"runs/s ({piped / plain:.0%} of plain)",
        flush=True,
    )


def claim_latency(admin: str, samples: int = 200) -> tuple[float, float]:
    url = fresh_database(admin, "bench_latency")
    enqueue(url, 0)
    context = multiprocessing.get_context("spawn")
    idle = context.Process(target=_idle_worker, args=(url,))
    idle.start()
    time.sleep(1.5)  # the worker is up, listening
    for _ in range(samples):
        enqueue(url, 1)
        time.sleep(0.02)
    time.sleep(1)
    idle.terminate()
    idle.join()
    with psycopg.connect(url) as conn:
        delays = [
            row[0] * 1000
            for row in conn.execute(
                "select extract(epoch from claimed_at - created_at) from ops.runs "
                "where claimed_at is not null"
            )
        ]
    quantiles = statistics.quantiles(delays, n=100)
    return quantiles[49], quantiles[98]


def _idle_worker(url: str) -> None:
    Worker(
        url,
        WorkerOptions(
            worker_id="idle", artifacts_dir=Path(tempfile.gettempdir()), lease_s=30, poll_s=5.0
        ),
    ).run()


def pgqueuer_drain(admin: str, jobs: int) -> float:
    from pgqueuer import PsycopgDriver, Queries, QueueManager  # noqa: PLC0415
    from pgqueuer.types import QueueExecutionMode  # noqa: PLC0415

    url = fresh_database(admin, "bench_pgqueuer")

    async def drain() -> float:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        driver = PsycopgDriver(conn)
        await Queries(driver).install()
        await Queries(driver).enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)
        manager = QueueManager(Queries(driver))

        @manager.entrypoint("noop")
        async def noop(_job: object) -> None:
            return None

        started = time.perf_counter()
        await manager.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
        elapsed = time.perf_counter() - started
        await conn.close()
        return jobs / elapsed

    return asyncio.run(drain())


def checkout_cost(files: int = 500, warm_runs: int = 20) -> tuple[float, float]:
    """Seconds for the first checkout (mirror fetched) and the mean of warm ones."""
    from reconciler.checkout import materialize  # noqa: PLC0415
    from tests.gitrepo import Repo  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        repo = Repo(root / "code")
        for i in range(files):
            repo.write(f"addons/mod{i % 25}/file{i}.py", f"# file {i}\n" * 40)
        sha = repo.commit("code")
        started = time.perf_counter()
        materialize(str(repo.root), sha, root / "w0", root / "mirrors")
        first = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(1, warm_runs + 1):
            materialize(str(repo.root), sha, root / f"w{i}", root / "mirrors")
        return first, (time.perf_counter() - started) / warm_runs


def container_overhead(steps: int = 10) -> float | None:
    """Seconds a container step costs more than a sandboxed process step (None: no runtime)."""
    from reconciler.worker import Setup, Worker  # noqa: PLC0415
    from reconciler.worker.executors import ExecutorKind  # noqa: PLC0415
    from reconciler.worker.queue import InMemoryQueue  # noqa: PLC0415
    from tests.containers import busybox_image, runtime  # noqa: PLC0415

    found = runtime()
    if found is None:
        return None
    image = busybox_image()
    timings = {}
    for tool in (None, "busybox@1"):
        queue = InMemoryQueue(tools={("busybox", "1"): image})
        config: dict[str, object] = {"steps": ["true"] * steps}
        if tool:
            config["tool"] = tool
        run = queue.add(config)
        options = WorkerOptions(
            worker_id="bench", artifacts_dir=Path(tempfile.gettempdir()), once=True, lease_s=30
        )
        started = time.perf_counter()
        Worker(queue, options, Setup(executor=ExecutorKind(found.kind.value))).run()
        timings[tool] = time.perf_counter() - started
        assert run.status == "succeeded", run.error
    return (timings["busybox@1"] - timings[None]) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="runs in flight per worker"
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument(
        "--only", choices=["lifecycle", "runs"], help="runs: only checkout and container figures"
    )
    parser.add_argument(
        "--pipelines", action="store_true", help="only: needs and lanes against plain runs"
    )
    args = parser.parse_args()
    if args.pipelines:
        with server(args.database_url) as admin:
            for workers in args.workers:
                pipelines(admin, args.runs - args.runs % 3, workers)
        return
    if args.only != "lifecycle":
        first, warm = checkout_cost()
        print(f"checkout of 500 files: first run {first * 1000:.0f} ms, warm {warm * 1000:.0f} ms")
        overhead = container_overhead()
        print(
            "container start: not measured (no podman or docker)"
            if overhead is None
            else f"container start: {overhead * 1000:.0f} ms more per step than a process step"
        )
        if args.only == "runs":
            return
    with server(args.database_url) as admin:
        for concurrency in args.concurrency:
            for workers in args.workers:
                rate = lifecycle(admin, args.runs, workers, concurrency)
                print(
                    f"lifecycle, {workers:2} worker(s) x {concurrency} in flight: "
                    f"{rate:,.0f} runs/s",
                    flush=True,
                )
        p50, p99 = claim_latency(admin)
        print(f"claim latency with NOTIFY: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
        try:
            print(f"pgqueuer drain: {pgqueuer_drain(admin, args.runs):,.0f} jobs/s", flush=True)
        except ImportError:
            print("pgqueuer drain: not measured (pip install pgqueuer)")


if __name__ == "__main__":
    main()
