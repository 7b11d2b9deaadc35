"""Many files to parse: the new projects are planned and written while the pool parses the
rest (commands/streamed.py). The plan, its problems and its writes are those of the plan made
from the parse cache (nothing to parse: nothing streamed), also when the belief that a project
is whole fails (a later file holds more of it) or a later file has problems."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from bench.fleet import write_fleet
from tests.gitrepo import Repo
from tests.test_apply_safety import snapshot
from tests.test_chunked_plan import reconcile, two_dbs

__all__ = ["two_dbs"]  # the fixture, shared with test_chunked_plan
PROJECTS = 450  # files to parse: more than files.PARALLEL_FROM, so a pool parses them
LATE_WORKFLOW = """\
apiVersion: ops/v1
kind: Workflow
project: fleet-00003
type: test
name: test-late
git_ref: dev
config: {steps: ["./test.sh --late"]}
"""


def fleet(root: Path) -> Repo:
    repo = Repo(root)
    repo.copy_examples()
    write_fleet(root, PROJECTS)
    repo.commit("fleet")
    return repo


def cold_and_warm(state: Path, urls: list[str], caches: Path, *args: str) -> tuple[int, str, str]:
    """The command with the files in the parse cache on the first database (nothing to parse)
    and with an empty cache on the second (parsed, streamed): the same output and rows."""
    small = {"RECONCILE_CHUNK_PROJECTS": "40"}  # many chunks, early ones among them
    warm = {**small, "RECONCILE_CACHE_DIR": str(caches / "warm")}
    subprocess.run(  # the files into the warm cache (it exits 1 when they have problems)
        [sys.executable, "-m", "reconciler", "validate", "-C", str(state)],
        env={**os.environ, **warm},
        check=False,
        capture_output=True,
    )
    cold = {**small, "RECONCILE_CACHE_DIR": tempfile.mkdtemp(dir=caches)}  # empty
    at_rest = reconcile(state, urls[0], warm, *args)
    streamed = reconcile(state, urls[1], cold, *args)
    assert streamed == at_rest
    assert snapshot(urls[1]) == snapshot(urls[0])
    return at_rest


def test_a_cold_plan_and_apply_streamed_match_the_plan_from_the_cache(
    tmp_path: Path, two_dbs: list[str]
) -> None:
    repo = fleet(tmp_path / "state")
    caches = tmp_path / "caches"
    caches.mkdir()
    for output in ("text", "json"):
        code, shown, _ = cold_and_warm(repo.root, two_dbs, caches, "plan", "-o", output)
        assert code == 0 and "fleet-00449" in shown
    code, applied, _ = cold_and_warm(repo.root, two_dbs, caches, "apply", "--yes")
    assert code == 0 and "to create" in applied


def test_a_project_finished_in_a_later_file_is_planned_whole(
    tmp_path: Path, two_dbs: list[str]
) -> None:
    repo = fleet(tmp_path / "state")
    repo.write("zz-late/fleet-00003-more.yaml", LATE_WORKFLOW)  # the last file parsed
    repo.commit("a workflow of an early project, in the last file")
    caches = tmp_path / "caches"
    caches.mkdir()
    code, shown, _ = cold_and_warm(repo.root, two_dbs, caches, "plan")
    assert code == 0 and "+ workflow fleet-00003/test/test-late" in shown
    code, _, _ = cold_and_warm(repo.root, two_dbs, caches, "apply", "--yes")
    assert code == 0
    assert any("test-late" in str(row) for row in snapshot(two_dbs[1])["workflows"])


def test_problems_in_a_later_file_write_nothing(tmp_path: Path, two_dbs: list[str]) -> None:
    repo = fleet(tmp_path / "state")
    repo.write("zz-late/broken.yaml", LATE_WORKFLOW.replace("type: test", "type: nonsense"))
    repo.commit("a broken last file")
    before: Any = snapshot(two_dbs[1])
    caches = tmp_path / "caches"
    caches.mkdir()
    code, _, error = cold_and_warm(repo.root, two_dbs, caches, "apply", "--yes")
    assert code == 1 and "zz-late/broken.yaml:4:" in error
    assert snapshot(two_dbs[1]) == before


def test_a_database_refusal_of_an_early_chunk_is_the_plans_own(
    tmp_path: Path, two_dbs: list[str]
) -> None:
    repo = fleet(tmp_path / "state")
    for url in two_dbs:  # a row not managed by reconcile holds fleet-00005's workspace key
        with psycopg.connect(url) as conn:
            conn.execute(
                "insert into ops.projects (workspace_key, slug, name, odoo_version) "
                "values ('fleet_00005', 'other-slug', 'Someone else', '18.0')"
            )
    caches = tmp_path / "caches"
    caches.mkdir()
    code, _, error = cold_and_warm(repo.root, two_dbs, caches, "plan")
    assert code == 1
    assert error.startswith("projects/fleet-00005.yaml:1:1: E140 the database refused project")
    repo.write("zz-late/broken.yaml", LATE_WORKFLOW.replace("type: test", "type: nonsense"))
    repo.commit("and a broken last file: its problems are the plan's, as before")
    code, _, error = cold_and_warm(repo.root, two_dbs, caches, "plan")
    assert code == 1 and "zz-late/broken.yaml:4:" in error and "E140" not in error
