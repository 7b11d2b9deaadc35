"""Pipelines through the real `reconcile` command on a real git repository: the upgrade gate,
`paths` with a reason for every skipped run, manual starts and retries, schedules shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli import Result, reconcile
from tests.gitrepo import Repo
from tests.helpers import scalar

pytestmark = pytest.mark.slow

PROJECT = """apiVersion: ops/v1
kind: Project
slug: {slug}
workspace_key: {key}
name: {slug}
odoo_version: "{version}"
config: {{modules: [sale, stock]}}{extra}
workflows:
  - type: build
    name: build
    git_ref: main
    on: [push]
    paths: ["addons/{slug}/**", "projects/{slug}.yaml"]
  - type: deploy
    name: deploy
    git_ref: main
    on: [manual]
    needs: [build]
    concurrency: production
  - type: backup
    name: nightly
    on: [schedule]
    schedule: "0 2 * * *"
    timezone: Europe/Brussels
"""

ADVISORIES = """apiVersion: ops/v1
kind: UpgradeAdvisory
key: owl-widgets
from_version: "17.0"
to_version: "18.0"
severity: high
title: Legacy widgets must be ported
description: Port them.
---
apiVersion: ops/v1
kind: UpgradeAdvisory
key: pos-sessions
from_version: "18.0"
to_version: "19.0"
severity: critical
title: POS sessions change
description: Close them.
affects_modules: [point_of_sale]
---
apiVersion: ops/v1
kind: UpgradeAdvisory
key: reports
from_version: "18.0"
to_version: "19.0"
severity: low
title: Report layouts
description: Check them.
"""


def project(slug: str, version: str = "17.0", extra: str = "") -> str:
    return PROJECT.format(slug=slug, key=slug.replace("-", "_"), version=version, extra=extra)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repository = Repo(tmp_path / "state")
    repository.write("catalog/advisories.yaml", ADVISORIES)
    repository.write("projects/acme.yaml", project("acme"))
    repository.commit("acme on 17.0")
    return repository


def run(repo: Repo, db_url: str, *args: str) -> Result:
    return reconcile(
        *args,
        "-C",
        str(repo.root),
        "--database-url",
        db_url,
        env={"RECONCILE_CACHE_DIR": str(repo.root.parent / "cache")},
    )


def db(db_url: str, *args: str) -> Result:
    return reconcile(*args, "--database-url", db_url)


def plan_json(repo: Repo, db_url: str) -> dict[str, Any]:
    result = run(repo, db_url, "plan", "-o", "json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_high_advisory_blocks_the_version_change_until_acknowledged(
    repo: Repo, db_url: str
) -> None:
    assert run(repo, db_url, "apply", "--yes").code == 0
    repo.write("projects/acme.yaml", project("acme", "19.0"))
    repo.commit("acme to 19.0")
    plan = plan_json(repo, db_url)
    assert [(a["key"], a["severity"], a["blocking"]) for a in plan["advisories"]] == [
        ("owl-widgets", "high", True),  # 17.0 -> 18.0 on the way
        ("reports", "low", False),  # pos-sessions affects a module acme does not install
    ]
    refused = run(repo, db_url, "apply", "--yes")
    assert refused.code == 1
    lines = [line for line in refused.stderr.splitlines() if " E170 " in line]
    assert lines == [
        "projects/acme.yaml:6:15: E170 project acme: upgrade 17.0 -> 19.0 passes high advisory "
        "owl-widgets (17.0 -> 18.0: Legacy widgets must be ported); read it, then add "
        "'owl-widgets' to the project's acknowledged_advisories"
    ]
    with psycopg.connect(db_url) as conn:
        assert scalar(conn, "select odoo_version from ops.projects") == "17.0"
    repo.write(
        "projects/acme.yaml",
        project("acme", "19.0", "\nacknowledged_advisories: [owl-widgets]"),
    )
    repo.commit("acknowledged")
    assert run(repo, db_url, "apply", "--yes").code == 0
    with psycopg.connect(db_url) as conn:
        assert scalar(conn, "select odoo_version from ops.projects") == "19.0"


def test_paths_enqueue_only_the_touched_project_and_say_why_not_the_others(
    repo: Repo, db_url: str
) -> None:
    for slug in ("beta", "gamma"):
        repo.write(f"projects/{slug}.yaml", project(slug))
    repo.commit("three projects")
    assert run(repo, db_url, "apply", "--yes").code == 0
    repo.write("addons/beta/models.py", "print('hi')\n")
    commit = repo.commit("beta code")
    plan = plan_json(repo, db_url)
    runs = {r["workflow"]: r for r in plan["runs"]}
    assert runs["beta/build/build"]["action"] == "enqueue"
    for slug in ("acme", "gamma"):
        skipped = runs[f"{slug}/build/build"]
        assert skipped["action"] == "skip"
        assert skipped["reason"].startswith("paths: none of the 1 file(s) changed since ")
    text = run(repo, db_url, "plan").stdout
    assert "  . acme/build/build: not enqueued (paths: none of the 1 file(s)" in text
    markdown = run(repo, db_url, "plan", "-o", "markdown").stdout
    assert "gamma/build/build: not enqueued (paths:" in markdown
    assert run(repo, db_url, "apply", "--yes").code == 0
    with psycopg.connect(db_url) as conn:
        enqueued = conn.execute("select git_commit, metadata->>'workflow' from ops.runs").fetchall()
    first = [r for r in enqueued if r[0] != commit]
    assert (commit, "beta/build/build") in enqueued and len(enqueued) == len(first) + 1


def test_start_and_retry_from_the_cli(repo: Repo, db_url: str) -> None:
    commit = repo.git("rev-parse", "HEAD")
    assert run(repo, db_url, "apply", "--yes").code == 0
    started = db(db_url, "runs", "start", "acme/deploy/deploy")
    assert started.code == 0, started.stderr
    assert f"acme/deploy/deploy #2 queued (manual, commit {commit[:12]})" in started.stdout
    run_id = started.stdout.split()[1].rstrip(":")
    refused = db(db_url, "runs", "retry", run_id)
    assert refused.code == 1
    assert refused.stderr.strip().endswith(
        "only a finished run (succeeded, failed, canceled) can be retried"
    )
    assert db(db_url, "runs", "cancel", run_id).code == 0
    retried = db(db_url, "runs", "retry", run_id)
    assert retried.code == 0, retried.stderr
    assert f", retry of {run_id}" in retried.stdout
    unknown = db(db_url, "runs", "start", "acme/deploy/nope")
    assert (unknown.code, unknown.stderr.strip()) == (
        1,
        "error: no workflow acme/deploy/nope in the database (apply it first)",
    )
    bad = db(db_url, "runs", "start", "acme/deploy/deploy", "--commit", "zz; drop table")
    assert bad.code == 1 and "commit must be a hexadecimal SHA" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_runs_schedule_shows_the_next_slots_and_runs_list_the_soonest(
    repo: Repo, db_url: str
) -> None:
    assert run(repo, db_url, "apply", "--yes").code == 0
    shown = db(db_url, "runs", "schedule")
    assert shown.code == 0
    lines = shown.stdout.splitlines()
    assert lines[0] == "acme/backup/nightly  '0 2 * * *' (Europe/Brussels)"
    assert lines[1] == "  last slot: none yet"
    slots = lines[2].removeprefix("  next: ").split(", ")
    assert len(slots) == 3 and all(s.endswith(("01:00 UTC", "00:00 UTC")) for s in slots)
    listed = db(db_url, "runs", "list").stdout.splitlines()
    assert listed[-1] == (
        f"next scheduled: acme/backup/nightly at {slots[0]} "
        "(`reconcile runs schedule` shows every scheduled workflow's slots)"
    )
    assert "next scheduled" not in db(db_url, "runs", "list", "--project", "other").stdout
    assert json.loads(db(db_url, "runs", "list", "-o", "json").stdout)  # JSON: runs only


FLEET_PROJECT = """apiVersion: ops/v1
kind: Project
slug: {slug}
workspace_key: {key}
name: {slug}
odoo_version: "18.0"
workflows:
  - {{type: build, name: build, git_ref: main, on: [push], paths: ["addons/{slug}/**"]}}
"""


def test_one_project_touched_in_a_fleet_of_three_thousand(tmp_path: Path, db_url: str) -> None:
    repo = Repo(tmp_path / "state")
    slugs = [f"p{i:04d}" for i in range(3000)]
    for slug in slugs:
        repo.write(f"projects/{slug}.yaml", FLEET_PROJECT.format(slug=slug, key=slug))
    repo.commit("the fleet")
    first = run(repo, db_url, "apply", "--yes", "-o", "json")
    assert first.code == 0, first.stderr
    assert len(json.loads(first.stdout)["runs"]) == 3000  # the first apply of the branch
    repo.write("addons/p1234/models.py", "x = 1\n")
    commit = repo.commit("p1234 only")
    plan = plan_json(repo, db_url)
    enqueued = [r["workflow"] for r in plan["runs"] if r["action"] == "enqueue"]
    skipped = [r for r in plan["runs"] if r["action"] == "skip"]
    assert enqueued == ["p1234/build/build"]
    assert len(skipped) == 2999
    assert {r["reason"].split(" since ")[0] for r in skipped} == {
        "paths: none of the 1 file(s) changed"
    }
    assert run(repo, db_url, "apply", "--yes").code == 0
    with psycopg.connect(db_url) as conn:
        assert scalar(conn, "select count(*) from ops.runs where git_commit = %s", (commit,)) == 1
