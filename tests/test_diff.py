"""`reconcile diff --base REF [--head REF]`: real git repositories with several commits and
branches, no database at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli import reconcile
from tests.gitrepo import Repo

pytestmark = pytest.mark.slow
NO_DATABASE = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # must not be used


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repository = Repo(tmp_path / "state")
    repository.copy_examples()
    repository.commit("the example fleet")
    repository.git("branch", "base")
    return repository


def changes(repo: Repo, *refs: str) -> list[tuple[str, str, str, list[str]]]:
    result = reconcile("diff", "-C", str(repo.root), "-o", "json", *refs, env=NO_DATABASE)
    assert result.code == 0, result.stderr
    plan: dict[str, Any] = json.loads(result.stdout)
    return [(c["kind"], c["key"], c["action"], c["fields"]) for c in plan["changes"]]


def test_no_change_between_equal_refs(repo: Repo) -> None:
    assert changes(repo, "--base", "base", "--head", "HEAD") == []


def test_added_edited_and_removed(repo: Repo) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    text = (repo.root / "projects/acme-erp.yaml").read_text()
    repo.write("projects/acme-erp.yaml", text.replace("workers: 8", "workers: 16"))
    repo.write(
        "catalog/redis.yaml",
        "apiVersion: ops/v1\nkind: Tool\nname: redis\nversion: '7'\ndocker_image: redis:7\n",
    )
    repo.remove("projects/initech-hr.yaml")
    repo.commit("feature")
    assert changes(repo, "--base", "base", "--head", "feature") == [
        ("project", "acme-erp", "update", ["config.workers"]),
        ("project", "initech-hr", "archive", ["status"]),
        ("workflow", "initech-hr/backup/weekly-backup", "disable", ["enabled"]),
        ("workflow", "initech-hr/build/build-dev", "disable", ["enabled"]),
        ("workflow", "initech-hr/deploy/deploy-dev", "disable", ["enabled"]),
        ("workflow", "initech-hr/test/test-dev", "disable", ["enabled"]),
        ("membership", "initech-hr/alice@acme.example", "delete", []),
        ("membership", "initech-hr/heidi@initech.example", "delete", []),
        ("membership", "initech-hr/ivan@initech.example", "delete", []),
        ("membership", "initech-hr/judy@initech.example", "delete", []),
        ("tool", "redis@7", "create", []),
    ]


def test_renames_and_moves_are_not_changes(repo: Repo) -> None:
    repo.git("mv", "catalog/tools.yaml", "catalog/images.yaml")
    repo.git("mv", "projects", "fleet")
    # the standalone test-dev workflow moves from globex-shop.yaml into a file of its own
    text = (repo.root / "fleet/globex-shop.yaml").read_text()
    head, workflow, membership = text.split("---\n")
    repo.write("fleet/globex-shop.yaml", head + "---\n" + membership)
    repo.write("fleet/globex-dev.yaml", workflow)
    repo.commit("reorganise")
    assert changes(repo, "--base", "base", "--head", "HEAD") == []


def test_head_defaults_to_the_working_tree(repo: Repo) -> None:
    text = (repo.root / "catalog/tools.yaml").read_text()
    repo.write("catalog/tools.yaml", text.replace("nginx:1.27-alpine", "nginx:1.27.3-alpine"))
    assert changes(repo, "--base", "base") == [("tool", "nginx@1.27", "update", ["docker_image"])]


def test_an_invalid_head_is_reported_like_validate(repo: Repo) -> None:
    repo.write("projects/broken.yaml", "apiVersion: ops/v1\nkind: Project\nslug: Bad Slug\n")
    repo.commit("broken")
    result = reconcile(
        "diff", "-C", str(repo.root), "--base", "base", "--head", "HEAD", env=NO_DATABASE
    )
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("projects/broken.yaml:1:1: E110 ")
    assert any(line.startswith("projects/broken.yaml:3:7: E113 slug:") for line in lines)
    assert lines[-1].startswith("error: ")


def test_unknown_ref_is_one_line(repo: Repo) -> None:
    result = reconcile("diff", "-C", str(repo.root), "--base", "no-such-branch", env=NO_DATABASE)
    assert result.code == 1
    assert result.stderr.strip() == "error: unknown git ref 'no-such-branch'"


def test_text_and_markdown_and_exit_codes(repo: Repo) -> None:
    text = (repo.root / "catalog/tools.yaml").read_text()
    repo.write("catalog/tools.yaml", text.replace("odoo:19.0", "odoo:19.0-2026"))
    repo.commit("bump")
    shown = reconcile(
        "diff", "-C", str(repo.root), "--base", "base", "--detailed-exitcode", env=NO_DATABASE
    )
    assert shown.code == 2
    assert '      docker_image: "odoo:19.0" -> "odoo:19.0-2026"' in shown.stdout
    markdown = reconcile(
        "diff",
        "-C",
        str(repo.root),
        "--base",
        "base",
        "--head",
        "HEAD",
        "-o",
        "markdown",
        env=NO_DATABASE,
    )
    assert markdown.stdout.startswith("### reconcile diff")
