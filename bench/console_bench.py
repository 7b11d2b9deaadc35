"""The web console: the fleet page's server time at 10,000 projects, and the delay from a log
line appended to a running run until a browser shows it.

    .venv/bin/python -m bench.console_bench [--projects 10000] [--database-url URL]

* fleet: N projects with 5 workflows and 2 runs each (100,000 runs at 10,000), one user a
  member of every project and one a member of 3. Server time of GET / (the console in-process,
  its whole stack: the member's transaction, the one fleet query, the template), p50 and p95
  of 30 requests each: the first page, a page in the middle (keyset), a search, and the first
  page of the member of 3.
* logs: `reconcile console` serving, Chromium (Playwright) on a running run's page; a line is
  appended with ops.append_run_logs (as a worker does) 20 times; the delay until the page's
  log shows it (the browser's clock when the line is added to the page, minus the clock at
  the commit; one machine, one clock).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from starlette.testclient import TestClient

from bench.reconcile_bench import fresh_database, server
from reconciler.console.app import COOKIE, Settings, create_app
from reconciler.console.identity import Verifier, mint

SECRET = "console-bench-secret-0123456789abcdef0123456789"  # noqa: S105  (a throwaway key for the benchmark)
CHROMIUM = "/usr/bin/chromium"


def populate(url: str, projects: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        big = conn.execute(
            "insert into auth.users (email) values ('fleet@bench') returning id"
        ).fetchone()[0]  # type: ignore[index]
        small = conn.execute(
            "insert into auth.users (email) values ('small@bench') returning id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "insert into ops.projects (workspace_key, slug, name, odoo_version) "
            "select 'p_' || lpad(n::text, 5, '0'), 'p-' || lpad(n::text, 5, '0'), "
            "'Project ' || n, (array['16.0','17.0','18.0','19.0'])[1 + n %% 4] "
            "from generate_series(1, %s) n",
            (projects,),
        )
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role) "
            "select id, %s, 'owner' from ops.projects",
            (big,),
        )
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role) "
            "select id, %s, 'viewer' from ops.projects order by slug desc limit 3",
            (small,),
        )
        conn.execute(
            "insert into ops.workflows (project_id, workflow_type, name) "
            "select p.id, t, t || '-main' from ops.projects p, "
            "unnest(array['build','test','deploy','backup','upgrade']) t"
        )
        for _ in range(2):
            conn.execute(
                "insert into ops.runs (project_id, workflow_id) "
                "select project_id, id from ops.workflows"
            )
        conn.execute("analyze")
    return {"big": big, "small": small}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def measure(call: Callable[[], Any], times: int = 30) -> tuple[float, float]:
    call()  # warm: the pool's connection, the template's compilation
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.95)


def fleet(url: str, projects: int) -> None:
    users = populate(url, projects)
    settings = Settings(url, Verifier(secret=SECRET.encode()), Path(tempfile.gettempdir()))
    middle = f"p-{projects // 2:05d}"
    cases = [
        ("first page, member of all", users["big"], "/"),
        ("middle page (keyset), member of all", users["big"], f"/?after={middle}"),
        ("search 'p-0999', member of all", users["big"], "/?q=p-0999"),
        ("first page, member of 3", users["small"], "/"),
    ]
    with TestClient(create_app(settings)) as client:
        for label, user, path in cases:
            client.cookies.set(COOKIE, mint(SECRET.encode(), user, "bench", 3600))
            response = client.get(path)
            assert response.status_code == 200 and "/projects/p-" in response.text, label
            p50, p95 = measure(lambda p=path: client.get(p))  # type: ignore[misc]
            print(f"fleet {label:40} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")


def log_delay(url: str) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        user = conn.execute(
            "insert into auth.users (email) values ('logs@bench') returning id"
        ).fetchone()[0]  # type: ignore[index]
        project = conn.execute(
            "insert into ops.projects (workspace_key, slug, name, odoo_version) "
            "values ('logs', 'logs', 'Logs', '18.0') returning id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "insert into ops.project_memberships (project_id, user_id, role) "
            "values (%s, %s, 'viewer')",
            (project, user),
        )
        workflow = conn.execute(
            "insert into ops.workflows (project_id, workflow_type, name) "
            "values (%s, 'build', 'logs') returning id",
            (project,),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("delete from ops.runs where status = 'queued'")
        run = conn.execute(
            "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
            (project, workflow),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("select ops.claim_run('bench', 600, true)")
        token = conn.execute("select lease_token from ops.runs where id = %s", (run,)).fetchone()[0]  # type: ignore[index]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RECONCILE_CONSOLE_JWT_SECRET": SECRET, "DATABASE_URL": url}
    console = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "console", "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/login", timeout=1)  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"]
            )
            context = browser.new_context(bypass_csp=True)  # for wait_for_function only
            context.add_cookies(
                [
                    {
                        "name": COOKIE,
                        "value": mint(SECRET.encode(), user, "logs@bench", 3600),
                        "url": base,
                    }
                ]
            )
            page = context.new_page()
            page.goto(f"{base}/runs/{run}")
            page.evaluate(
                """() => { window.seen = {};
                new MutationObserver((changes) => { for (const c of changes) for (const n of
                c.addedNodes) { const m = /mark-(\\d+)/.exec(n.textContent || "");
                if (m) window.seen[m[1]] = Date.now(); } })
                .observe(document.getElementById("logs"), {childList: true}); }"""
            )
            delays = []
            with psycopg.connect(url, autocommit=True) as conn:
                for n in range(20):
                    time.sleep(0.37)  # lines arrive at any moment of the console's poll
                    lines = json.dumps([{"level": "info", "message": f"mark-{n}"}])
                    conn.execute(
                        "select ops.append_run_logs(%s, %s, %s::jsonb)", (run, token, lines)
                    )
                    committed = time.time() * 1000
                    page.wait_for_function(f"window.seen['{n}'] !== undefined", timeout=10_000)
                    delays.append(page.evaluate(f"window.seen['{n}']") - committed)
            browser.close()
        print(
            f"log line to browser: p50 {statistics.median(delays):6.1f} ms  "
            f"p95 {percentile(delays, 0.95):6.1f} ms  max {max(delays):6.1f} ms"
        )
    finally:
        console.terminate()
        console.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with server(args.database_url) as admin:
        url = fresh_database(admin, "ops_console_bench")
        started = time.perf_counter()
        fleet(url, args.projects)
        print(
            f"(fleet of {args.projects} built and measured in {time.perf_counter() - started:.0f} s)"
        )
        if Path(CHROMIUM).exists():
            log_delay(url)
        else:
            print(f"log line to browser: skipped, no Chromium at {CHROMIUM}")


if __name__ == "__main__":
    main()
