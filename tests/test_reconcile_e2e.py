"""`reconcile` end to end: a real git repository, the real command, a real server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler import files
from reconciler.core.summary import combine
from reconciler.db import state
from tests.cli import Result, reconcile
from tests.gitrepo import Repo
from tests.helpers import scalar

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repository = Repo(tmp_path / "state")
    repository.copy_examples()
    repository.commit("the example fleet")
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


def counts(db_url: str) -> dict[str, int]:
    tables = [
        "projects",
        "workflows",
        "project_memberships",
        "tools",
        "upgrade_advisories",
        "runs",
        "reconcile_applies",
    ]
    with psycopg.connect(db_url) as conn:
        return {t: scalar(conn, f"select count(*) from ops.{t}") for t in tables}


def plan_json(repo: Repo, db_url: str, *args: str) -> dict[str, Any]:
    result = run(repo, db_url, "plan", "-o", "json", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_applying_the_example_fleet_twice(repo: Repo, db_url: str) -> None:
    first = run(repo, db_url, "apply", "--yes")
    assert first.code == 0, first.stderr
    assert "Plan: 38 to create, 10 user(s) to create, 4 run(s) to enqueue." in first.stdout
    after_first = counts(db_url)
    assert after_first == {
        "projects": 3,
        "workflows": 16,
        "project_memberships": 11,
        "tools": 5,
        "upgrade_advisories": 3,
        "runs": 4,
        "reconcile_applies": 1,
    }
    second = run(repo, db_url, "apply", "--yes", "--detailed-exitcode")
    assert second.code == 0 and "No changes." in second.stdout
    assert counts(db_url) == after_first
    plan = plan_json(repo, db_url)
    assert plan["changes_present"] is False and plan["changes"] == []
    assert {r["action"] for r in plan["runs"] if r["action"] != "skip"} == {"exists"}
    skipped = [r for r in plan["runs"] if r["action"] == "skip"]
    assert skipped and all(r["reason"].startswith("runs on pushes to ") for r in skipped)


def test_a_new_commit_updates_and_enqueues_once(repo: Repo, db_url: str) -> None:
    run(repo, db_url, "apply", "--yes")
    text = (repo.root / "projects/acme-erp.yaml").read_text()
    repo.write("projects/acme-erp.yaml", text.replace("workers: 8", "workers: 12"))
    commit = repo.commit("more workers")
    plan = plan_json(repo, db_url)
    assert [(c["key"], c["action"], c["fields"]) for c in plan["changes"]] == [
        ("acme-erp", "update", ["config.workers"])
    ]
    assert plan["commit"] == commit and plan["ref"] == "main"
    assert sorted(r["workflow"] for r in plan["runs"] if r["action"] == "enqueue") == [
        "acme-erp/build/build-main",
        "acme-erp/test/test-main",
        "globex-shop/build/build-main",
        "globex-shop/test/test-main",
    ]
    assert run(repo, db_url, "apply", "--yes").code == 0
    assert run(repo, db_url, "apply", "--yes").code == 0
    with psycopg.connect(db_url) as conn:
        keys = [r[0] for r in conn.execute("select idempotency_key from ops.runs")]
        assert sum(commit in k for k in keys) == 4 and len(keys) == len(set(keys)) == 8
        assert (
            scalar(conn, "select count(*) from ops.workflows where git_commit = %s", (commit,)) == 4
        )


def test_uncommitted_changes_enqueue_nothing_and_say_why(repo: Repo, db_url: str) -> None:
    repo.write(
        "catalog/extra.yaml",
        "apiVersion: ops/v1\nkind: Tool\nname: redis\nversion: '7'\ndocker_image: redis:7\n",
    )
    result = run(repo, db_url, "apply", "--yes")
    assert result.code == 0
    assert "not enqueued (uncommitted changes in the state directory)" in result.stdout
    assert counts(db_url)["runs"] == 0 and counts(db_url)["tools"] == 6


def test_branch_selects_the_workflows_that_run(repo: Repo, db_url: str) -> None:
    plan = plan_json(repo, db_url, "--ref", "dev")
    other = [r for r in plan["runs"] if r["action"] == "skip"]
    assert other and all(r["reason"].endswith(", this is dev") for r in other)
    assert sorted(r["workflow"] for r in plan["runs"] if r["action"] == "enqueue") == [
        "globex-shop/test/test-dev",
        "initech-hr/build/build-dev",
        "initech-hr/deploy/deploy-dev",
        "initech-hr/test/test-dev",
    ]


def test_removal_prunes_without_losing_history(repo: Repo, db_url: str) -> None:
    run(repo, db_url, "apply", "--yes")
    repo.remove("projects/initech-hr.yaml")
    text = (repo.root / "catalog/tools.yaml").read_text()
    repo.write(
        "catalog/tools.yaml", text.split("---\napiVersion: ops/v1\nkind: Tool\nname: nginx")[0]
    )
    repo.commit("retire initech and nginx")
    plan = plan_json(repo, db_url)
    actions = sorted((c["kind"], c["action"]) for c in plan["changes"])
    assert actions == sorted(
        [("project", "archive")]
        + [("workflow", "disable")] * 4
        + [("membership", "delete")] * 4
        + [("tool", "delete")]
    )
    assert run(repo, db_url, "apply", "--yes").code == 0
    with psycopg.connect(db_url) as conn:
        assert (
            scalar(conn, "select status from ops.projects where slug = 'initech-hr'") == "archived"
        )
        assert (
            scalar(
                conn,
                "select count(*) from ops.workflows w join ops.projects p "
                "on p.id = w.project_id where p.slug = 'initech-hr' and w.enabled",
            )
            == 0
        )
    assert plan_json(repo, db_url)["changes"] == []


def test_unmanaged_rows_need_adopt(repo: Repo, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into ops.tools (tool_name, version, docker_image) "
            "values ('odoo', '18.0', 'odoo:18.0-old')"
        )
    before = counts(db_url)
    refused = run(repo, db_url, "apply", "--yes")
    assert refused.code == 1
    assert "not managed by reconcile: tool odoo@18.0; rerun with --adopt" in refused.stderr
    assert counts(db_url) == before
    assert run(repo, db_url, "apply", "--yes", "--adopt").code == 0
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "select docker_image, managed_by from ops.tools "
            "where tool_name = 'odoo' and version = '18.0'"
        ).fetchone() == ("odoo:18.0", "ops-reconciler")


def test_emptying_the_files_is_refused_unless_allowed(repo: Repo, db_url: str) -> None:
    run(repo, db_url, "apply", "--yes")
    for path in list(repo.root.rglob("*.yaml")):
        path.unlink()
    repo.commit("empty")
    before = counts(db_url)
    refused = run(repo, db_url, "apply", "--yes")
    assert refused.code == 1 and "--allow-prune-all" in refused.stderr
    assert counts(db_url) == before
    limited = run(repo, db_url, "apply", "--yes", "--allow-prune-all", "--max-prune", "3")
    assert limited.code == 1 and "more than --max-prune 3" in limited.stderr
    assert run(repo, db_url, "apply", "--yes", "--allow-prune-all").code == 0


def test_unknown_user_on_a_supabase_auth_schema(repo: Repo, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("comment on schema auth is 'Supabase auth'")
        conn.execute(
            "insert into auth.users (email) select e from unnest(%s::text[]) e",
            (
                [
                    "alice@acme.example",
                    "bob@acme.example",
                    "carol@acme.example",
                    "dave@acme.example",
                    "erin@globex.example",
                    "frank@globex.example",
                    "heidi@initech.example",
                    "ivan@initech.example",
                    "judy@initech.example",
                ],
            ),
        )
    result = run(repo, db_url, "apply", "--yes")
    assert result.code == 1
    assert result.stderr.splitlines()[0] == (
        "projects/globex-shop.yaml:50:7: E130 membership globex-shop/grace@globex.example: "
        "no user 'grace@globex.example' in auth.users"
    )
    assert counts(db_url)["projects"] == 0


def test_a_held_lock_times_out_with_one_line(repo: Repo, db_url: str) -> None:
    with psycopg.connect(db_url) as holder:
        holder.execute("select from ops.reconcile_lock for update")  # what an apply takes
        result = run(repo, db_url, "apply", "--yes", "--lock-timeout", "0.3")
    assert result.code == 1
    assert result.stderr.strip() == (
        "error: reconcile: another reconcile holds the lock, or another transaction holds a "
        "lock on what it must change, for longer than --lock-timeout; nothing was written; "
        "try again when it has finished"
    )


def test_the_database_refusal_is_shown_at_plan_time_with_its_file(repo: Repo, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into ops.projects (workspace_key, slug, name, odoo_version) "
            "values ('acme_erp', 'other-slug', 'Someone else', '18.0')"
        )
    result = run(repo, db_url, "plan")
    assert result.code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(
        "projects/acme-erp.yaml:2:1: E140 the database refused project "
        "acme-erp: duplicate key value violates unique constraint"
    )
    assert counts(db_url)["projects"] == 1


def test_the_literal_forms_users_type(repo: Repo, db_url: str) -> None:
    dry = run(repo, db_url, "--dry-run", "--detailed-exitcode")
    assert dry.code == 2 and "Plan: 38 to create" in dry.stdout
    assert counts(db_url)["projects"] == 0
    no_tty = run(repo, db_url)
    assert no_tty.code == 1 and "needs --yes" in no_tty.stderr
    assert run(repo, db_url, "--yes").code == 0
    assert run(repo, db_url, "--dry-run", "--detailed-exitcode").code == 0


def test_markdown_output(repo: Repo, db_url: str) -> None:
    result = run(repo, db_url, "plan", "-o", "markdown")
    assert result.code == 0
    assert result.stdout.startswith("### reconcile plan")
    assert "| 38 | 0 | 0 | 0 | 0 | 0 | 4 |" in result.stdout


def test_a_row_edited_outside_reconcile_is_put_back(repo: Repo, db_url: str) -> None:
    run(repo, db_url, "apply", "--yes")
    with psycopg.connect(db_url) as conn:
        conn.execute("update ops.projects set name = 'Edited by hand' where slug = 'acme-erp'")
        # bookkeeping of the database and the workers is not an edit
        conn.execute("update ops.workflows set git_commit = 'x', updated_at = now()")
        assert scalar(conn, "select count(*) from ops.workflows where spec_hash is null") == 0
    plan = plan_json(repo, db_url)
    assert [
        (c["key"], c["action"], c["fields"], c["before"]["name"], c.get("drift"))
        for c in plan["changes"]
    ] == [("acme-erp", "update", ["name"], "Edited by hand", True)]
    assert plan["summary"]["drift"] == 1
    text = run(repo, db_url, "plan", "--detailed-exitcode")
    assert text.code == 2
    assert "~ project acme-erp (drift: changed outside reconcile; this puts it back)" in text.stdout
    assert run(repo, db_url, "apply", "--yes").code == 0
    assert plan_json(repo, db_url)["changes"] == []


def test_database_summaries_match_the_files_after_an_apply(repo: Repo, db_url: str) -> None:
    """The row hash is written twice, in Python and in SQL: they must agree, or every plan
    would compare every row in full."""
    run(repo, db_url, "apply", "--yes")
    wanted, _ = combine(f.summary for f in files.load(repo.root, None).files.values())
    with psycopg.connect(db_url) as conn:
        actual = state.group_states(conn)
    assert {g: (s.total, s.unsettled) for g, s in actual.items()} == {
        g: (total, 0) for g, total in wanted.items()
    }


AWKWARD = """\
apiVersion: ops/v1
kind: UpgradeAdvisory
key: awkward-text
from_version: "17.0"
to_version: "18.0"
severity: low
title: "Tabs\\tnew\\nlines, back\\\\slashes, \\"quotes\\" and ünïcödé ✓"
description: "\\\\N is not null; {braces}, [brackets], commas, and 'single quotes'"
affects_modules: ["a,b", "quote\\"d", "back\\\\slash", "{x}", "NULL", ""]
---
apiVersion: ops/v1
kind: Tool
name: weird
version: "1 | 2"
docker_image: weird:latest
config: {text: "line1\\nline2\\ttab", nested: {list: [1, 2.5, true, null, "\\\\"]}}
"""


def test_awkward_text_survives_the_round_trip(repo: Repo, db_url: str) -> None:
    repo.write("catalog/awkward.yaml", AWKWARD.replace('""]', '"x"]'))
    repo.commit("awkward")
    assert run(repo, db_url, "apply", "--yes").code == 0, "apply failed"
    assert plan_json(repo, db_url)["changes"] == []  # what was written reads back the same
    with psycopg.connect(db_url) as conn:
        title, modules = conn.execute(
            "select title, affects_modules from ops.upgrade_advisories "
            "where advisory_key = 'awkward-text'"
        ).fetchone() or ("", [])
    assert title == 'Tabs\tnew\nlines, back\\slashes, "quotes" and ünïcödé ✓'
    assert modules == ["a,b", 'quote"d', "back\\slash", "{x}", "NULL", "x"]


def test_history_lists_the_applies_newest_first(repo: Repo, db_url: str) -> None:
    def history(*args: str) -> str:
        result = reconcile("history", "--database-url", db_url, *args)
        assert result.code == 0, result.stderr
        return result.stdout

    assert history().strip() == "No applies yet."
    run(repo, db_url, "apply", "--yes")
    text = (repo.root / "catalog/tools.yaml").read_text()
    repo.write("catalog/tools.yaml", text.replace("odoo:19.0", "odoo:19.0-1"))
    commit = repo.commit("bump odoo 19")
    run(repo, db_url, "apply", "--yes")
    run(repo, db_url, "apply", "--yes")  # no changes: not recorded
    lines = history().strip().splitlines()
    assert len(lines) == 2
    assert f"  {commit[:12]}  main" in lines[0] and lines[0].endswith("1 update, 4 runs")
    assert lines[1].endswith("38 create, 4 runs")
    entries = json.loads(history("-o", "json", "--limit", "1"))
    assert [(e["commit"], e["ref"], e["summary"]["update"]) for e in entries] == [
        (commit, "main", 1)
    ]


def test_a_saved_plan_applies_exactly(repo: Repo, db_url: str, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    assert run(repo, db_url, "plan", "--out", str(saved)).code == 0
    result = reconcile("apply", str(saved), "--database-url", db_url)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith(f"Applied {saved}. Plan: 38 to create")
    assert plan_json(repo, db_url)["changes"] == []


def test_a_stale_saved_plan_is_refused_naming_what_moved(
    repo: Repo, db_url: str, tmp_path: Path
) -> None:
    run(repo, db_url, "apply", "--yes")
    text = (repo.root / "catalog/tools.yaml").read_text()
    repo.write("catalog/tools.yaml", text.replace("odoo:17.0", "odoo:17.0-1"))
    repo.commit("bump 17")
    saved = tmp_path / "plan.json"
    assert run(repo, db_url, "plan", "--out", str(saved)).code == 0
    with psycopg.connect(db_url) as conn:  # someone edits the database meanwhile
        conn.execute("update ops.projects set name = 'Renamed' where slug = 'globex-shop'")
    before = counts(db_url)
    result = reconcile("apply", str(saved), "--database-url", db_url)
    assert result.code == 1
    assert result.stderr.strip() == (
        "error: the plan is stale: the database or the files changed since it was made "
        "(project globex-shop); nothing was written: make a new plan"
    )
    assert counts(db_url) == before
    with psycopg.connect(db_url) as conn:
        assert scalar(conn, "select name from ops.projects where slug = 'globex-shop'") == "Renamed"


def test_a_file_that_is_not_a_saved_plan(tmp_path: Path, db_url: str) -> None:
    bogus = tmp_path / "plan.json"
    bogus.write_text("{}")
    result = reconcile("apply", str(bogus), "--database-url", db_url)
    assert result.code == 1
    assert result.stderr.strip() == f"error: {bogus} is not a plan saved by `reconcile plan --out`"


def test_on_a_terminal_apply_shows_the_plan_and_asks(repo: Repo, db_url: str) -> None:
    """The interactive path, on a real pseudo-terminal: no, then yes."""

    def answer(reply: bytes) -> str:
        leader, follower = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["NO_COLOR"] = "1"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "apply",
                "-C",
                str(repo.root),
                "--database-url",
                db_url,
            ],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=env,
            close_fds=True,
        )
        os.close(follower)
        seen = b""
        while b"Apply this plan?" not in seen:
            seen += os.read(leader, 4096)
        os.write(leader, reply + b"\n")
        process.wait(timeout=60)
        try:
            while chunk := os.read(leader, 4096):
                seen += chunk
        except OSError:
            pass
        os.close(leader)
        assert process.returncode == 0
        return seen.decode()

    refused = answer(b"n")
    assert "Plan: 38 to create" in refused and counts(db_url)["projects"] == 0
    assert "Nothing was applied." in refused
    accepted = answer(b"y")
    assert "Applied. Plan: 38 to create" in accepted and counts(db_url)["projects"] == 3
