"""Benchmark of `reconcile` on generated fleets, against one server, in one process.

    .venv/bin/python -m bench.reconcile_bench [--sizes 100 1000 10000] [--database-url URL]

Per fleet size N (N projects, 5 workflows and 10 members each, 2N users; 16N rows):
  cold validate+plan   no file cache, empty database (the plan's writes are rolled back)
  first apply          into the empty database
  warm no-op plan      nothing changed since the apply
  one-project edit     one file edited and committed, then applied into the full fleet
  baseline COPY TO     the managed tables read out with COPY (what any plan must at least read)
  baseline COPY FROM   the same rows loaded with COPY into the same empty tables
Peak memory is the process's maximum resident set so far (it only grows).
Without --database-url: DATABASE_URL, else the embedded server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.fleet import edit_one, write_fleet
from reconciler.commands.reconcile import Options, reconcile
from reconciler.core.plan import Safety
from reconciler.db import migrations
from reconciler.db.embedded import EmbeddedPostgres

TABLES = ["auth.users", "ops.projects", "ops.workflows", "ops.project_memberships"]
GIT = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with EmbeddedPostgres.default().session() as conninfo:
        yield conninfo


def fresh_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = make_conninfo(admin, dbname=name)
    with psycopg.connect(url) as conn:
        migrations.migrate(conn, lock_timeout_s=30)
    return url


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args], cwd=root, env={**os.environ, **GIT}, check=True, capture_output=True
    )


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def copy_out(url: str) -> tuple[float, dict[str, bytes]]:
    data: dict[str, bytes] = {}
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        for table in TABLES:
            query = sql.SQL("copy {} to stdout").format(sql.SQL(table))
            with cursor.copy(query) as copy:
                data[table] = b"".join(bytes(chunk) for chunk in copy)
    return time.perf_counter() - started, data


def copy_in(url: str, data: dict[str, bytes]) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        for table in TABLES:
            with cursor.copy(sql.SQL("copy {} from stdin").format(sql.SQL(table))) as copy:
                copy.write(data[table])
    return time.perf_counter() - started


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_size(admin: str, n: int, work: Path) -> dict[str, float]:
    root = work / f"fleet-{n}"
    write_fleet(root, n)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    url = fresh_database(admin, f"bench_{n}")
    cache = work / f"cache-{n}"
    os.environ["RECONCILE_CACHE_DIR"] = str(cache)
    options = Options(state_dir=root, database_url=url, safety=Safety(max_prune=None))

    figures = {"rows": 16.0 * n}
    figures["cold_plan_s"] = timed(lambda: reconcile(options, commit=False))
    figures["first_apply_s"] = timed(lambda: reconcile(options, commit=True))
    figures["noop_plan_s"] = timed(lambda: reconcile(options, commit=False))
    edit_one(root, n)
    git(root, "commit", "-q", "-am", "edit one project")
    figures["edit_apply_s"] = timed(lambda: reconcile(options, commit=True))
    figures["copy_to_s"], data = copy_out(url)
    figures["copy_from_s"] = copy_in(fresh_database(admin, f"bench_{n}_copy"), data)
    figures["peak_mib"] = peak_mib()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    results = {}
    try:
        with server(args.database_url) as admin:
            for n in args.sizes:
                results[n] = bench_size(admin, n, work)
                print(
                    json.dumps({"n": n, **{k: round(v, 3) for k, v in results[n].items()}}),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "| N | rows | cold plan | first apply | no-op plan | one-project edit | COPY TO | "
        "COPY FROM | peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, f in results.items():
        print(
            f"| {n:,} | {int(f['rows']):,} | {f['cold_plan_s']:.2f} s | "
            f"{f['first_apply_s']:.2f} s | {f['noop_plan_s']:.2f} s | "
            f"{f['edit_apply_s']:.2f} s | {f['copy_to_s']:.2f} s | {f['copy_from_s']:.2f} s | "
            f"{f['peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
