"""The console in a real browser (Playwright driving the system's Chromium), against a real
database with the example fleet applied, `reconcile worker` running its runs and
`reconcile console` serving, both as subprocesses, exactly as an operator starts them.

The owner signs in, opens the fleet, a project, starts a run and watches its log lines arrive
while the worker runs it, cancels a run that is still queued behind it, downloads the
artifact, retries the run. The viewer sees the same pages without a button, and a forged
request is refused. A member of another project sees nothing of this one. Screenshots of the
pages are kept under test-artifacts/console/ (the path is printed at the end).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli import reconcile

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-test-secret-of-enough-length-0123456789"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "projects"
WAIT_MS = 20_000

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

    # Assertions wait as long as actions: a loaded CI machine may take seconds to claim a run.
    expect.set_options(timeout=WAIT_MS)
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed"),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium; see .ci/run)",
    ),
]


@dataclass(frozen=True)
class Stack:
    base: str
    db_url: str
    release: Path  # the build step runs until this file exists
    tokens: dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the console exited"
        try:
            with urllib.request.urlopen(f"{base}/login", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the console did not answer in 60 s")


def _build_steps(release: Path) -> dict[str, Any]:
    """build-main: makes an artifact, prints a line every 0.3 s until released (at most 60 s)."""
    loop = (
        f"i=0; while [ ! -e {release} ] && [ $i -lt 200 ]; do i=$((i+1)); "
        'echo "tick-$i <b>not bold</b>"; sleep 0.3; done; echo released'
    )
    return {
        "steps": ["mkdir -p dist && echo report > dist/report.tar.gz && echo started", loop],
        "artifacts": ["dist/*.tar.gz"],
        "timeout_s": 120,
    }


@pytest.fixture(scope="module")
def stack(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("console-browser")
    env = {
        "DATABASE_URL": module_db_url,
        "RECONCILE_CONSOLE_JWT_SECRET": SECRET,
        "RECONCILE_STATE_DIR": str(work / "state"),
        "RECONCILE_CACHE_DIR": str(work / "cache"),
    }
    applied = reconcile("apply", "-C", str(EXAMPLES), "--yes", env=env)
    assert applied.code == 0, applied.stderr
    # Steps run sandboxed as an unprivileged user (the worker as root drops to `nobody`), who
    # cannot enter pytest's private temporary folders: the release flag lives where it can.
    flags = Path(tempfile.mkdtemp(prefix="console-browser-release-"))
    flags.chmod(0o755)
    release = flags / "release"
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        conn.execute(
            "update ops.workflows set config = %s where name = 'build-main' and project_id = "
            "(select id from ops.projects where slug = 'acme-erp')",
            (json.dumps(_build_steps(release)),),
        )
        # The apply enqueued the commit's push runs; one of them is build-main, which now runs
        # until released and would keep the single worker from the runs this test starts.
        conn.execute(
            "select ops.cancel_run(id, 'test setup') from ops.runs where status = 'queued'"
        )
    tokens = {}
    for email in ("alice@acme.example", "dave@acme.example", "erin@globex.example"):
        minted = reconcile("console", "token", "--email", email, env=env)
        assert minted.code == 0, minted.stderr
        tokens[email] = minted.stdout.strip()
    port = _free_port()
    full_env = {**os.environ, **env}
    artifacts = str(work / "artifacts")
    worker = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "worker", "--artifacts-dir", artifacts,
         "--poll", "0.5"],
        env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    console = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "console", "--port", str(port),
         "--artifacts-dir", artifacts],
        env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, console)
        yield Stack(base, module_db_url, release, tokens)
    finally:
        release.touch()
        for process in (console, worker):
            process.terminate()
        for process in (console, worker):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(flags, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"console screenshots: {SCREENSHOTS}")


def signed_in(browser: Browser, stack: Stack, email: str) -> Page:
    page = browser.new_context(accept_downloads=True).new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(stack.base + "/")
    expect(page).to_have_url(stack.base + "/login")
    page.fill("#token", stack.tokens[email])
    page.click("form.login button[type=submit]")
    expect(page).to_have_url(stack.base + "/")
    expect(page.locator("header .who")).to_have_text(email)
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _runs_count(stack: Stack) -> int:
    with psycopg.connect(stack.db_url) as conn:
        row = conn.execute("select count(*) from ops.runs").fetchone()
        assert row is not None
        return int(row[0])


RUNS: dict[str, str] = {}  # run pages the owner made, for the other personas' tests


def test_owner_watches_a_run_live_cancels_one_queued_and_retries(
    browser: Browser, stack: Stack
) -> None:
    page = signed_in(browser, stack, "alice@acme.example")
    fleet = page.locator("#fleet")
    expect(fleet).to_contain_text("acme-erp")
    expect(fleet).to_contain_text("initech-hr")  # alice is a viewer there
    expect(fleet).not_to_contain_text("globex-shop")
    expect(fleet.locator("tr", has_text="acme-erp")).to_contain_text("drifted")  # edited here
    shot(page, "fleet")

    page.click("text=acme-erp")
    expect(page.locator("#role")).to_have_text("owner")
    expect(page.locator("#members")).to_contain_text("dave@acme.example")
    expect(page.locator("#advisories")).to_contain_text("18.0")
    shot(page, "project")

    # Start a run: the worker takes it, and its lines appear while it runs.
    page.click("button[data-workflow='build/build-main']")
    expect(page.locator("#status")).to_have_text("running")
    logs = page.locator("#logs")
    expect(logs).to_contain_text("tick-3")
    url = page.url
    expect(logs).to_contain_text("tick-8")  # more lines, on the same page: streamed
    assert page.url == url
    expect(logs).to_contain_text("<b>not bold</b>")  # shown as text
    shot(page, "run-live")
    RUNS["first"] = url

    # A second run waits behind the first (one worker): cancel it while it is queued.
    page.goto(stack.base + "/projects/acme-erp")
    page.click("button[data-workflow='build/build-main']")
    expect(page.locator("#status")).to_have_text("queued")
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("canceled")
    expect(page.locator("#events")).to_contain_text("canceled by alice@acme.example")

    # Let the first finish: its page turns final by itself, with the artifact to download.
    page.goto(url)
    stack.release.touch()
    expect(page.locator("#status")).to_have_text("succeeded")
    expect(page.locator("#logs")).to_contain_text("released")
    with page.expect_download() as download:
        page.click("#artifacts a[download]")
    assert Path(download.value.path()).read_text() == "report\n"
    shot(page, "run-finished")

    page.click("#retry")
    expect(page.locator(".facts")).to_contain_text("retry")
    assert page.url != url
    RUNS["retry"] = page.url
    expect(page.locator("#status")).to_have_text("succeeded")

    page.goto(stack.base + "/history")
    expect(page.locator("#applies")).to_contain_text("workflow acme-erp/build/build-main")
    shot(page, "history")


def test_viewer_sees_the_pages_without_actions_and_a_forged_action_is_refused(
    browser: Browser, stack: Stack
) -> None:
    assert RUNS, "runs from the owner's test"
    page = signed_in(browser, stack, "dave@acme.example")
    page.click("text=acme-erp")
    expect(page.locator("#role")).to_have_text("viewer")
    expect(page.locator("#workflows")).to_contain_text("build/build-main")
    assert page.locator("form.start-run").count() == 0
    shot(page, "project-viewer")
    page.goto(RUNS["first"])
    expect(page.locator("#logs")).to_contain_text("released")
    assert page.locator("#retry").count() == 0 and page.locator("#cancel").count() == 0

    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    before = _runs_count(stack)
    forged = page.request.post(RUNS["first"] + "/retry", form={"csrf": csrf or ""})
    assert forged.status == 403 and "refused by the database" in forged.text()
    assert _runs_count(stack) == before


def test_a_member_of_another_project_sees_nothing_of_this_one(
    browser: Browser, stack: Stack
) -> None:
    assert RUNS, "runs from the owner's test"
    page = signed_in(browser, stack, "erin@globex.example")
    expect(page.locator("#fleet")).to_contain_text("globex-shop")
    expect(page.locator("#fleet")).not_to_contain_text("acme-erp")
    for path in ("/projects/acme-erp", RUNS["first"], RUNS["retry"]):
        response = page.goto(path if path.startswith("http") else stack.base + path)
        assert response is not None and response.status == 404
        expect(page.locator("main")).not_to_contain_text("build-main")
    page.goto(stack.base + "/history")
    expect(page.locator("main")).not_to_contain_text("acme-erp")
