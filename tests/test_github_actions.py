"""The GitHub Actions for a desired-state repository: valid against GitHub's workflow schema,
the shipped templates and this repository's copies in step, and the commands they run
exercised with the variables GitHub sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from reconciler.commands.shared import cache_dir
from tests.gitrepo import Repo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "github-actions"
WORKFLOWS = sorted(TEMPLATES.glob("*.yml")) + sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
SECRET = "s3cret-Pa55"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_workflow_matches_githubs_schema(workflow: Path) -> None:
    checked = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(workflow),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("template", sorted(TEMPLATES.glob("*.yml")), ids=lambda p: p.name)
def test_this_repositorys_copies_follow_the_templates(template: Path) -> None:
    """Only the state directory, the package to install, the guard and where the script
    lies (here: in templates/, in a desired-state repository: .github/) may differ."""
    ours = (ROOT / ".github" / "workflows" / template.name).read_text()
    ours = ours.replace("templates/github-actions/reconcile-ci.sh", ".github/reconcile-ci.sh")
    allowed = (
        "  STATE_DIR:",
        "  RECONCILER_PACKAGE:",
        "  # ops-reconciler is installed from",
        "  # serves it):",
        "    # this repository has no",
        "    if: vars.RECONCILE_DATABASE_CONFIGURED",
    )
    assert [line for line in ours.splitlines() if not line.startswith(allowed)] == [
        line for line in template.read_text().splitlines() if not line.startswith(allowed)
    ]


@pytest.mark.parametrize("template", sorted(TEMPLATES.glob("*.yml")), ids=lambda p: p.name)
def test_every_job_restores_the_parse_cache_where_reconcile_keeps_it(
    template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner starts empty: the cache, restored, spares parsing the unchanged files."""
    workflow = yaml.safe_load(template.read_text())
    monkeypatch.delenv("RECONCILE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for job in workflow["jobs"].values():
        [cache] = [s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
        assert Path(cache["with"]["path"]).expanduser() == cache_dir()
        assert cache["with"]["key"].startswith(cache["with"]["restore-keys"])


def github_env(repo: Repo, tmp_path: Path, event: str, **extra: str) -> dict[str, str]:
    """The variables GitHub sets for a job (those the script and reconcile read)."""
    summary, output, temp = tmp_path / "summary.md", tmp_path / "output", tmp_path / "runner"
    temp.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {
        **base,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_WORKSPACE": str(repo.root),
        "GITHUB_REPOSITORY": "acme/ops-state",
        "GITHUB_SHA": repo.git("rev-parse", "HEAD"),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "RUNNER_TEMP": str(temp),
        "STATE_DIR": ".",
        "RECONCILE_CACHE_DIR": str(tmp_path / "cache"),
        **extra,
    }


def ci(repo: Repo, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(TEMPLATES / "reconcile-ci.sh"), command],
        cwd=repo.root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repository = Repo(tmp_path / "state")
    repository.copy_examples()
    base = repository.commit("the example fleet")
    repository.git("update-ref", "refs/remotes/origin/main", base)  # what checkout fetches
    return repository


def with_password(url: str) -> str:
    return make_conninfo(url, password=SECRET)  # trust auth ignores it; it must not leak


def counts(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select (select count(*) from ops.projects) + "
            "(select count(*) from ops.reconcile_applies)"
        ).fetchone()
    return int(row[0]) if row else -1


@pytest.fixture
def reader_url(db_url: str) -> str:
    """A read-only database user, as the pull-request and drift secrets hold."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("drop role if exists reconcile_reader")
        conn.execute("create role reconcile_reader login in role ops_reader")
    return make_conninfo(db_url, user="reconcile_reader")


def test_pull_request(repo: Repo, tmp_path: Path, db_url: str, reader_url: str) -> None:
    repo.git("checkout", "-q", "-b", "feature")
    text = (repo.root / "catalog/tools.yaml").read_text()
    repo.write("catalog/tools.yaml", text.replace("nginx:1.27-alpine", "nginx:1.27.3-alpine"))
    repo.commit("bump nginx")
    env = github_env(
        repo,
        tmp_path,
        "pull_request",
        GITHUB_BASE_REF="main",
        GITHUB_HEAD_REF="feature",
        GITHUB_REF="refs/pull/7/merge",
        GITHUB_REF_NAME="7/merge",
        DATABASE_URL=with_password(reader_url),
    )
    done = ci(repo, "pull-request", env)
    assert done.returncode == 0, done.stderr
    output = (tmp_path / "output").read_text()
    comment = Path(output.strip().removeprefix("comment="))
    body = comment.read_text()
    assert body.startswith("<!-- ops-reconciler -->\n### reconcile diff")
    assert "tool nginx@1.27" in body and "### reconcile plan" in body
    assert body in (tmp_path / "summary.md").read_text()
    everything = done.stdout + done.stderr + body
    assert SECRET not in everything
    assert counts(db_url) == 0  # the plan of a pull request writes nothing


def test_pull_request_with_an_invalid_file_is_annotated(repo: Repo, tmp_path: Path) -> None:
    repo.git("checkout", "-q", "-b", "broken")
    repo.write("catalog/bad.yaml", "apiVersion: ops/v1\nkind: Tool\nname: Bad\n")
    repo.commit("broken")
    env = github_env(repo, tmp_path, "pull_request", GITHUB_BASE_REF="main")
    done = ci(repo, "pull-request", env)
    assert done.returncode == 1
    assert "::error file=catalog/bad.yaml,line=3,col=7,title=E113::name: 'Bad' does not match" in (
        done.stdout
    )
    assert "catalog/bad.yaml:3:7: E113" in done.stderr


def test_push_to_main_applies_once(repo: Repo, tmp_path: Path, db_url: str) -> None:
    env = github_env(
        repo,
        tmp_path,
        "push",
        GITHUB_REF="refs/heads/main",
        GITHUB_REF_NAME="main",
        DATABASE_URL=with_password(db_url),
    )
    first = ci(repo, "apply", env)
    assert first.returncode == 0, first.stderr
    assert "Plan: 38 to create" in (tmp_path / "summary.md").read_text()
    again = ci(repo, "apply", env)
    assert again.returncode == 0 and "No changes." in again.stdout
    assert SECRET not in first.stdout + first.stderr + again.stdout + again.stderr


def test_drift_check(repo: Repo, tmp_path: Path, db_url: str, reader_url: str) -> None:
    applied = ci(
        repo,
        "apply",
        github_env(repo, tmp_path, "push", GITHUB_REF_NAME="main", DATABASE_URL=db_url),
    )
    assert applied.returncode == 0, applied.stderr
    env = github_env(repo, tmp_path, "schedule", GITHUB_REF_NAME="main", DATABASE_URL=reader_url)
    clean = ci(repo, "drift", env)
    assert clean.returncode == 0, clean.stderr
    assert "The database matches the files." in clean.stdout
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "update ops.tools set docker_image = 'odoo:latest' where tool_name = 'odoo'"
            " and version = '18.0'"
        )
    drifted = ci(repo, "drift", env)
    assert drifted.returncode == 1
    assert "::error title=drift::" in drifted.stdout
    assert "drift" in (tmp_path / "summary.md").read_text()


def test_missing_secret_is_one_clear_line(repo: Repo, tmp_path: Path) -> None:
    done = ci(repo, "apply", github_env(repo, tmp_path, "push", GITHUB_REF_NAME="main"))
    assert done.returncode == 1
    assert "the apply needs the DATABASE_URL secret" in done.stderr
