"""Benchmark of `reconcile` on generated fleets, each figure next to its floor in the same run.

    .venv/bin/python -m bench.reconcile_bench table  [--projects 10000] [--repeat 3]
    .venv/bin/python -m bench.reconcile_bench growth [--sizes 1000 10000 100000]
    (--database-url URL, else DATABASE_URL, else the embedded server)

A fleet of N projects has 5 workflows and 10 members each, 2N users: 16N rows. Every command
is the `reconcile` CLI in its own process, as a user or CI runs it, with its text output (time:
wall clock; memory: its peak resident set, pool processes included). The floors are measured in this process:

  parse floor   read the files, load them with PyYAML's C loader (CSafeLoader) and validate
                every document with a compiled validator (jsonschema-rs) of the same schemas
  COPY FROM     the fleet's rows (taken from the applied database with COPY TO) loaded with
                COPY into the same empty tables
  COPY TO       the managed tables read out with COPY (what any plan must at least read)

`table` prints medians of --repeat runs with their ratios; `growth` one run per size, with the
time per 1,000 projects (flat when the growth is linear). The machine's load average is printed
with each: the figures are only comparable within one run. CPU seconds (the command's and its
pool's, against the floor's own) are printed for the parsing commands too: on a machine whose
cores are shared, they show the work done where wall clock shows the waiting.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jsonschema_rs
import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.fleet import edit_one, write_fleet
from reconciler.db import migrations
from reconciler.db.embedded import EmbeddedPostgres

TABLES = ["auth.users", "ops.projects", "ops.workflows", "ops.project_memberships"]
GIT = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}
RECONCILE = str(Path(sys.executable).parent / "reconcile")
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
Figures = dict[str, float]


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with EmbeddedPostgres.default().session() as conninfo:
        yield conninfo


def fresh_database(admin: str, name: str) -> str:
    """A new, migrated database named after `name` and this process (two benches on one server
    never drop each other's)."""
    name = f"{name}_p{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = make_conninfo(admin, dbname=name)
    with psycopg.connect(url) as conn:
        migrations.migrate(conn, lock_timeout_s=30)
    return url


def drop_database(admin: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(str(name)))
        )


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args], cwd=root, env={**os.environ, **GIT}, check=True, capture_output=True
    )


def cli(*args: str, cache: Path, url: str | None = None) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak MiB) of one `reconcile` command and the processes it
    started; it must succeed. The peak is that of the whole process tree (`TreeMemory`),
    or of its largest process (the kernel's ru_maxrss, exact) when that is more."""
    env = {**os.environ, "RECONCILE_CACHE_DIR": str(cache)}
    env.pop("DATABASE_URL", None)
    if url:
        env["DATABASE_URL"] = url
    started = time.perf_counter()
    process = subprocess.Popen(
        [RECONCILE, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    with TreeMemory(process.pid) as memory:
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"reconcile {' '.join(args)} exited {code}: {process.stderr.read()!r}")  # type: ignore[union-attr]
    return elapsed, usage.ru_utime + usage.ru_stime, max(memory.peak_kib, usage.ru_maxrss) / 1024


class TreeMemory:
    """The peak memory of a process and its descendants (a parsing pool), sampled every
    SAMPLE_S from /proc: the sum of their proportional set sizes (PSS: a page shared by n
    processes, as forked workers share their parent's, counts 1/n in each), so the tree is
    counted once. ru_maxrss alone is the largest single process's peak, not the tree's."""

    SAMPLE_S = 0.05

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(self.SAMPLE_S):
            self.peak_kib = max(self.peak_kib, sum(map(_pss_kib, _tree(self.pid))))


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                todo += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def parse_floor(root: Path) -> tuple[float, float]:
    """Read, C-load and compiled-validate every file: what any reconcile must at least do."""
    schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))]
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in schemas])
    by_kind = {
        s["title"]: jsonschema_rs.Draft202012Validator(s, registry=registry) for s in schemas
    }
    started, cpu = time.perf_counter(), time.process_time()
    for path in sorted(glob.glob(f"{root}/**/*.yaml", recursive=True)):
        with open(path, encoding="utf-8") as handle:
            for document in yaml.load_all(handle.read(), Loader=yaml.CSafeLoader):
                assert by_kind[document["kind"]].is_valid(document)
    return time.perf_counter() - started, time.process_time() - cpu


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


def make_fleet(work: Path, n: int) -> Path:
    """N projects committed on `main`, then a branch `pr` that edits one of them."""
    root = work / f"fleet-{n}"
    write_fleet(root, n)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "fleet")
    return root


def run_once(  # noqa: PLR0913  (json_plan: the table only)
    admin: str, root: Path, n: int, work: Path, tag: str, *, json_plan: bool = False
) -> Figures:
    """Every figure of one run on the fleet at `root` (its HEAD: main); with `json_plan`, a
    warm plan of the whole fleet shown as text and as JSON too (`table` only)."""
    f: Figures = {}
    peak = 0.0
    caches = work / f"caches-{tag}"

    def timed(name: str, *args: str, cache: str, url: str | None = None) -> None:
        nonlocal peak
        f[name], f[name.replace("_s", "_cpu_s")], mib = cli(*args, cache=caches / cache, url=url)
        f[name.replace("_s", "_mib")] = mib
        peak = max(peak, mib)

    here = ("-C", str(root))
    f["parse_floor_s"], f["parse_floor_cpu_s"] = parse_floor(root)
    timed("cold_validate_s", "validate", *here, cache="validate")
    git(root, "branch", "-f", "base")
    edit_one(root, n, 1)
    git(root, "commit", "-q", "-am", "edit for the diff")
    timed("cold_diff_s", "diff", *here, "--base", "base", "-o", "json", cache="diff")
    git(root, "reset", "-q", "--hard", "base")

    url = fresh_database(admin, f"reconcile_bench_{n}_{tag}")
    timed("cold_plan_s", "plan", *here, cache="main", url=url)
    if json_plan:  # warm cache, the database still empty
        timed("text_plan_s", "plan", *here, cache="main", url=url)
        timed("json_plan_s", "plan", *here, "-o", "json", cache="main", url=url)
    timed("first_apply_s", "apply", *here, "--yes", cache="main", url=url)
    f["copy_to_s"], rows = copy_out(url)
    copied = fresh_database(admin, f"reconcile_bench_{n}_{tag}_copy")
    f["copy_from_s"] = copy_in(copied, rows)
    drop_database(admin, copied)
    timed("noop_plan_s", "plan", *here, cache="main", url=url)
    cold = fresh_database(admin, f"reconcile_bench_{n}_{tag}_cold")
    timed("cold_apply_s", "apply", *here, "--yes", cache="cold-apply", url=cold)
    drop_database(admin, cold)

    f["pr_job_s"], f["pr_job_cpu_s"], f["pr_job_mib"] = pull_request_job(
        root, n, caches / "main", url, work / f"pr-{tag}"
    )
    edit_one(root, n)
    git(root, "commit", "-q", "-am", "edit one project")
    timed("edit_apply_s", "apply", *here, "--yes", cache="main", url=url)
    drop_database(admin, url)
    git(root, "reset", "-q", "--hard", "base")  # the next run edits the same project again
    f["peak_mib"] = max(peak, f["pr_job_mib"])
    return f


def pull_request_job(
    root: Path, n: int, cache: Path, url: str, work: Path
) -> tuple[float, float, float]:
    """A fresh checkout of a pull request editing one project, with main's cache restored:
    validate, diff against main, read-only plan (the CI template's pull-request job).
    (Seconds, as CI bills them, CPU seconds, and the peak MiB of its commands.)"""
    clone = work / "checkout"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    git(clone, "checkout", "-q", "-b", "pr")
    edit_one(clone, n, 2)
    git(clone, "commit", "-q", "-am", "edit one project")
    restored = work / "restored-cache"
    shutil.copytree(cache, restored)
    here = ("-C", str(clone))
    runs = [
        cli("validate", *here, cache=restored),
        cli("diff", *here, "--base", "origin/main", "-o", "markdown", cache=restored),
        cli("plan", *here, "--read-only", "-o", "markdown", cache=restored, url=url),
    ]
    shutil.rmtree(work, ignore_errors=True)
    return sum(r[0] for r in runs), sum(r[1] for r in runs), max(r[2] for r in runs)


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


ROWS = [  # (label, figure, floor figures summed, floor label)
    ("cold `validate`", "cold_validate_s", ("parse_floor_s",), "C YAML load + compiled validator"),
    ("cold `diff` (one project edited)", "cold_diff_s", ("parse_floor_s",), "same"),
    ("cold `plan` (empty database)", "cold_plan_s", ("parse_floor_s",), "same"),
    ("first apply, warm parse cache", "first_apply_s", ("copy_from_s",), "raw `COPY FROM`"),
    ("first apply, cold", "cold_apply_s", ("copy_from_s", "parse_floor_s"), "COPY FROM + parse"),
    (
        "`plan -o json`, 16N changes, warm cache",
        "json_plan_s",
        ("text_plan_s",),
        "the same as text",
    ),
    ("warm no-op plan", "noop_plan_s", ("copy_to_s",), "raw `COPY TO`"),
    ("one-project edit (apply)", "edit_apply_s", (), ""),
    ("pull-request job, cache restored", "pr_job_s", (), "goal: under 3 s"),
]
CPU_OF = {  # rows whose CPU seconds are shown: against the floor's, or alone
    "cold_validate_s": "parse_floor_cpu_s",
    "cold_diff_s": "parse_floor_cpu_s",
    "cold_plan_s": "parse_floor_cpu_s",
    "json_plan_s": "text_plan_cpu_s",
    "pr_job_s": None,
}


def table(admin: str, n: int, repeat: int, work: Path) -> None:
    root = make_fleet(work, n)
    runs = []
    for i in range(repeat):
        runs.append(run_once(admin, root, n, work, f"r{i}", json_plan=True))
        print(json.dumps({k: round(v, 3) for k, v in runs[-1].items()}), flush=True)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"\nN={n:,} ({16 * n:,} rows), medians of {repeat}; {load_note()}\n")
    print(f"| N={n:,} | reconcile | floor in the same run | ratio | CPU: reconcile / floor |")
    print("|---|---|---|---|---|")
    for label, name, floors, floor_label in ROWS:
        value = median[name]
        cpu = cpu_cell(median, name)
        if not floors:
            print(f"| {label} | {value:.2f} s | {floor_label} | | {cpu} |")
            continue
        floor = sum(median[f] for f in floors)
        print(
            f"| {label} | {value:.2f} s | {floor_label} {floor:.2f} s | {value / floor:.1f}x "
            f"| {cpu} |"
        )
    print(f"\nPeak memory of any command: {median['peak_mib']:.0f} MiB")


def cpu_cell(median: Figures, name: str) -> str:
    if name not in CPU_OF:
        return ""
    mine = median[name.replace("_s", "_cpu_s")]
    least_name = CPU_OF[name]
    if least_name is None:
        return f"{mine:.2f} s"
    least = median[least_name]
    return f"{mine:.2f} s / {least:.2f} s = {mine / least:.1f}x"


GROWTH = [  # (label, figure, whether it is a command whose peak memory is measured)
    ("cold validate", "cold_validate_s", True),
    ("cold diff", "cold_diff_s", True),
    ("cold plan", "cold_plan_s", True),
    ("first apply (warm parse cache)", "first_apply_s", True),
    ("cold first apply", "cold_apply_s", True),
    ("no-op plan", "noop_plan_s", True),
    ("one-project edit (apply)", "edit_apply_s", True),
    ("PR job (validate, diff, plan)", "pr_job_s", True),
    ("parse floor", "parse_floor_s", False),
    ("COPY FROM", "copy_from_s", False),
]
MEMORY_LIMIT_MIB = 2048  # the goal at 100,000 projects


def growth(admin: str, sizes: list[int], work: Path) -> None:
    results: dict[int, Figures] = {}
    for n in sizes:
        root = make_fleet(work, n)
        results[n] = run_once(admin, root, n, work, f"n{n}")
        print(json.dumps({"n": n, **{k: round(v, 3) for k, v in results[n].items()}}), flush=True)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work / f"caches-n{n}", ignore_errors=True)
    print(growth_table(results, load_note()))


def growth_table(results: dict[int, Figures], note: str) -> str:
    """Seconds (and seconds per 1,000 projects: flat when the growth is linear), then each
    command's peak memory (its process tree's)."""
    sizes = sorted(results)
    head = "| | " + " | ".join(f"N={n:,}" for n in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)
    lines = [f"\nOne run per size; {note}. Seconds (seconds per 1,000 projects).\n", head, rule]
    for label, name, _ in GROWTH:
        cells = [f"{results[n][name]:.2f} s ({results[n][name] / n * 1000:.3f})" for n in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Peak memory (MiB) of each command's process tree.", "", head, rule]
    for label, name, command in GROWTH:
        if command:
            peaks = [f"{results[n][name.replace('_s', '_mib')]:.0f}" for n in sizes]
            lines.append(f"| {label} | " + " | ".join(peaks) + " |")
    largest = sizes[-1]
    verdict = "under" if results[largest]["peak_mib"] < MEMORY_LIMIT_MIB else "OVER"
    lines.append(
        f"\nPeak of any command at N={largest:,}: {results[largest]['peak_mib']:.0f} MiB "
        f"({verdict} the {MEMORY_LIMIT_MIB} MiB goal)."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["table", "growth"])
    parser.add_argument("--projects", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    try:
        with server(args.database_url) as admin:
            if args.what == "table":
                table(admin, args.projects, args.repeat, work)
            else:
                growth(admin, args.sizes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
