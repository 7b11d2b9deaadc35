"""Apply is all or nothing: SIGKILL at random moments, and four applies at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.fleet import write_fleet
from tests.conftest import create_database, drop_database
from tests.gitrepo import Repo

pytestmark = pytest.mark.slow

SNAPSHOT = {
    "projects": "select slug, workspace_key, name, description, odoo_version, status, "
    "config::text, managed_by from ops.projects order by slug",
    "workflows": "select p.slug, w.workflow_type, w.name, w.description, w.enabled, w.git_ref, "
    "w.git_commit, w.triggers::text, w.config::text, w.managed_by "
    "from ops.workflows w join ops.projects p on p.id = w.project_id order by 1, 2, 3",
    "memberships": "select p.slug, u.email, m.role, m.managed_by from ops.project_memberships m "
    "join ops.projects p on p.id = m.project_id "
    "join auth.users u on u.id = m.user_id order by 1, 2",
    "tools": "select tool_name, version, docker_image, config::text, managed_by from ops.tools "
    "order by 1, 2",
    "advisories": "select advisory_key, severity, title, managed_by from ops.upgrade_advisories "
    "order by 1",
    "runs": "select p.slug, r.run_number, r.idempotency_key, r.status from ops.runs r "
    "join ops.projects p on p.id = r.project_id order by 1, 2",
    "users": "select email from auth.users order by 1",
    "applies": "select count(*) from ops.reconcile_applies",
}


def snapshot(url: str) -> dict[str, list[Any]]:
    """The content of every table by natural key: no ids, no timestamps."""
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query.encode()).fetchall() for name, query in SNAPSHOT.items()}


def apply_command(state: Path, url: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reconciler",
        "apply",
        "--yes",
        "-C",
        str(state),
        "--database-url",
        url,
        "--no-cache",
    ]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def start_apply(state: Path, url: str, errors: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        apply_command(state, url), env=environment(), stdout=subprocess.DEVNULL, stderr=errors
    )


def apply_once(state: Path, url: str) -> float:
    started = time.monotonic()
    done = subprocess.run(
        apply_command(state, url),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


@pytest.fixture
def fresh_db(server_conninfo: str, template_db: str) -> Any:
    made: list[str] = []

    def make() -> str:
        name = create_database(server_conninfo, template=template_db)
        made.append(name)
        return psycopg.conninfo.make_conninfo(server_conninfo, dbname=name)

    yield make
    for name in made:
        drop_database(server_conninfo, name)


def example_repo(root: Path) -> Path:
    repo = Repo(root)
    repo.copy_examples()
    repo.commit("examples")
    return root


def fleet_repo(root: Path, n: int) -> Path:
    repo = Repo(root)
    write_fleet(root, n)
    repo.commit("fleet")
    return root


def kill_trials(state: Path, fresh_db: Any, trials: int, seed: int) -> dict[str, int]:
    reference = fresh_db()
    before = snapshot(reference)
    duration = apply_once(state, reference)
    after = snapshot(reference)
    assert after != before

    outcomes = {"before": 0, "after": 0}
    chance = random.Random(seed)
    for _ in range(trials):
        url = fresh_db()
        process = start_apply(state, url)
        time.sleep(chance.uniform(0.3, 1.1) * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        seen = snapshot(url)
        assert seen in (before, after), "a killed apply left the database between two states"
        outcomes["before" if seen == before else "after"] += 1
    return outcomes


def test_sigkill_at_random_moments_on_the_example_fleet(tmp_path: Path, fresh_db: Any) -> None:
    outcomes = kill_trials(example_repo(tmp_path / "state"), fresh_db, trials=15, seed=1)
    assert outcomes["before"] > 0  # some kills did land before the commit


def test_sigkill_at_random_moments_on_a_generated_fleet(tmp_path: Path, fresh_db: Any) -> None:
    outcomes = kill_trials(fleet_repo(tmp_path / "state", 300), fresh_db, trials=15, seed=2)
    assert outcomes["before"] > 0


def test_four_applies_at_once_end_as_one(tmp_path: Path, fresh_db: Any) -> None:
    state = example_repo(tmp_path / "state")
    reference = fresh_db()
    apply_once(state, reference)
    url = fresh_db()
    logs = [(tmp_path / f"apply-{i}.log").open("wb") for i in range(4)]
    processes = [start_apply(state, url, log) for log in logs]
    codes = [process.wait(timeout=120) for process in processes]
    for log in logs:
        log.close()
    assert codes == [0, 0, 0, 0], [p.read_text() for p in tmp_path.glob("apply-*.log")]
    assert snapshot(url) == snapshot(reference)
    with psycopg.connect(url) as conn:
        keys = [r[0] for r in conn.execute("select idempotency_key from ops.runs")]
    assert len(keys) == len(set(keys)) == 4
