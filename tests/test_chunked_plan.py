"""A plan made a chunk of projects at a time is the plan made at once: the same output (text,
JSON, Markdown), the same rows written, the same prunes, problems and refusals, in one
transaction (commands/chunked.py). RECONCILE_CHUNK_PROJECTS makes the chunks tiny here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.fleet import project_yaml, write_fleet
from reconciler.commands.chunked import split
from tests.conftest import create_database, drop_database
from tests.gitrepo import Repo
from tests.test_apply_safety import snapshot

CHUNKED = {"RECONCILE_CHUNK_PROJECTS": "2"}  # 9 projects: 5 chunks, the last one short
AT_ONCE = {"RECONCILE_CHUNK_PROJECTS": "1000"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def two_dbs(server_conninfo: str, template_db: str) -> Any:
    names = [create_database(server_conninfo, template=template_db) for _ in range(2)]
    yield [psycopg.conninfo.make_conninfo(server_conninfo, dbname=n) for n in names]
    for name in names:
        drop_database(server_conninfo, name)


def reconcile(state: Path, url: str, chunks: dict[str, str], *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | chunks
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *args, "-C", str(state), "--database-url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, _without_database(done.stdout, url), done.stderr


def _without_database(output: str, url: str) -> str:
    """The output without what differs between two databases: their names, the users' ids."""
    name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    return UUID.sub("UUID", output.replace(name, "DB"))


def fleet(root: Path) -> Repo:
    """The examples (tools, advisories, three projects) and six generated projects."""
    repo = Repo(root)
    repo.copy_examples()
    write_fleet(root, 6)
    repo.commit("fleet")
    return repo


def both(state: Path, urls: list[str], *args: str) -> tuple[int, str, str]:
    """The command at once on the first database and in chunks on the second: the same."""
    at_once = reconcile(state, urls[0], AT_ONCE, *args)
    chunked = reconcile(state, urls[1], CHUNKED, *args)
    assert chunked == at_once
    assert snapshot(urls[1]) == snapshot(urls[0])
    return at_once


def test_first_apply_and_changes_in_chunks_match_the_plan_made_at_once(
    tmp_path: Path, two_dbs: list[str]
) -> None:
    repo = fleet(tmp_path / "state")
    for output in ("text", "json", "markdown"):
        code, shown, _ = both(repo.root, two_dbs, "plan", "-o", output)
        assert code == 0 and "fleet-00005" in shown
    code, applied, _ = both(repo.root, two_dbs, "apply", "--yes")
    assert code == 0 and "to create" in applied
    # one project edited, two deleted (pruned: only the database has them), one added
    repo.write("projects/fleet-00001.yaml", project_yaml(1, 6, edited=True))
    repo.remove("projects/fleet-00002.yaml")
    repo.remove("projects/fleet-00004.yaml")
    repo.write("projects/fleet-00009.yaml", project_yaml(9, 6))
    repo.commit("edit, prune, add")
    for output in ("text", "json", "markdown"):
        code, shown, _ = both(repo.root, two_dbs, "plan", "-o", output)
        assert "fleet-00004 (archive)" in shown or '"archive"' in shown or output == "markdown"
    code, applied, _ = both(repo.root, two_dbs, "apply", "--yes", "-o", "json")
    assert code == 0 and '"action": "archive"' in applied
    code, shown, _ = both(repo.root, two_dbs, "plan")
    assert "No changes" in shown


def test_a_refusal_in_a_later_chunk_writes_nothing(tmp_path: Path, two_dbs: list[str]) -> None:
    repo = fleet(tmp_path / "state")
    both(repo.root, two_dbs, "apply", "--yes")
    before = snapshot(two_dbs[1])
    repo.write("projects/fleet-00000.yaml", project_yaml(0, 6, edited=True))  # first chunk
    repo.remove("projects/fleet-00005.yaml")  # the last chunk prunes
    repo.commit("edit, prune")
    code, _, error = both(repo.root, two_dbs, "apply", "--yes", "--max-prune", "0")
    assert code == 1 and "--max-prune 0" in error
    assert snapshot(two_dbs[1]) == before  # the first chunk's edit was rolled back


def test_problems_of_every_chunk_are_reported_and_nothing_written(
    tmp_path: Path, two_dbs: list[str]
) -> None:
    repo = fleet(tmp_path / "state")
    before = snapshot(two_dbs[1])
    for i in (0, 5):  # a need that names no workflow, in the first and in the last chunk
        text = project_yaml(i, 6).replace(
            "name: upgrade-next,", "name: upgrade-next, needs: [nowhere],"
        )
        repo.write(f"projects/fleet-{i:05d}.yaml", text)
    repo.commit("broken needs")
    code, _, error = both(repo.root, two_dbs, "apply", "--yes")
    assert code == 1
    assert "fleet-00000.yaml" in error and "fleet-00005.yaml" in error
    assert snapshot(two_dbs[1]) == before


@pytest.mark.parametrize("count", [0, 1, 2, 3, 16, 17, 18, 40, 4001])
def test_chunks_take_every_project_once_in_order_with_short_edges(count: int) -> None:
    projects = [f"p{i:05d}" for i in range(count)]
    chunks = split(projects, 16)
    assert [p for chunk in chunks for p in chunk] == projects
    assert all(0 < len(chunk) <= 16 for chunk in chunks)
    if count > 16:  # the first and last are short: less to plan before writing, and after
        assert len(chunks[0]) == len(chunks[-1]) == 2
    else:
        assert len(chunks) == (1 if count else 0)
