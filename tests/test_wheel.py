"""ops-reconciler as a team installs it: the GitHub Actions templates' install line, run as
written, into a fresh virtual environment outside this checkout, then the commands from there.

The templates install from the git repository at a release tag
(`ops-reconciler @ git+https://github.com/your-org/ops-reconciler@v0.1.0`). The test makes
that repository locally (this checkout's files, committed and tagged v0.1.0) and swaps only
the URL's `https://github.com/your-org/ops-reconciler` for that repository's `file://` URL:
pip clones the tag, builds the wheel and installs it, as on a runner. What the checkout has
and the wheel lacks (a .sql file, a template) fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.gitrepo import Repo
from tests.helpers import scalar

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "github-actions" / "reconcile-apply.yml"
PLACEHOLDER = "https://github.com/your-org/ops-reconciler"


def sh(
    command: list[str] | str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        shell=isinstance(command, str),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def release_repository(into: Path) -> Path:
    """This checkout's files (tracked and new, as `git ls-files` sees them), tagged v0.1.0."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    repo = Repo(into)
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file() and not relative.startswith(".venv/"):
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    repo.commit("release")
    repo.git("tag", "v0.1.0")
    return into


def install_line() -> tuple[str, str]:
    """The template's install step and the package it installs, as written."""
    workflow = yaml.safe_load(TEMPLATE.read_text())
    package = workflow["env"]["RECONCILER_PACKAGE"]
    [step] = [
        s["run"] for s in workflow["jobs"]["apply"]["steps"] if "pip install" in s.get("run", "")
    ]
    return step, package


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ops-reconciler installed by the template's line."""
    base = tmp_path_factory.mktemp("install")
    source = release_repository(base / "ops-reconciler")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    # A runner's setup-python comes with a recent pip (a `name @ git+file://` URL needs one).
    sh([str(venv / "bin/python"), "-m", "pip", "install", "-q", "-U", "pip"], base, env)
    step, package = install_line()
    assert package.startswith(f"ops-reconciler @ git+{PLACEHOLDER}@v")
    env["RECONCILER_PACKAGE"] = package.replace(PLACEHOLDER, source.as_uri())
    done = sh(step, base, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_the_installed_wheel_runs_every_command_from_outside_the_checkout(
    installed: Path, tmp_path: Path, db_url: str
) -> None:
    reconcile = str(installed / "bin" / "reconcile")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")} | {
        "RECONCILE_CACHE_DIR": str(tmp_path / "cache")
    }
    where = sh(
        [str(installed / "bin/python"), "-c", "import reconciler; print(reconciler.__file__)"],
        tmp_path,
        env,
    )
    assert where.stdout.startswith(str(installed)), where.stdout  # not this checkout
    fleet = Repo(tmp_path / "fleet")
    fleet.copy_examples()
    fleet.commit("fleet")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = sh([reconcile, *args], tmp_path, env)
        assert done.returncode == 0, f"reconcile {' '.join(args)}: {done.stderr}"
        return done

    assert run("validate", "-C", "fleet").stdout.endswith("resource(s): valid\n")
    assert "Plan: 38 to create" in run("plan", "-C", "fleet", "--database-url", db_url).stdout
    run("apply", "-C", "fleet", "--yes", "--database-url", db_url)
    run("worker", "--once", "--database-url", db_url, "--artifacts-dir", str(tmp_path / "a"))
    with psycopg.connect(db_url) as conn:
        assert scalar(conn, "select count(*) from ops.runs") > 0
        assert scalar(conn, "select count(*) from ops.runs where status = 'queued'") == 0
    assert "status: up to date" in run("db", "status", "--database-url", db_url).stdout
    run("db", "drop", "--yes", "--database-url", db_url)
    with psycopg.connect(db_url) as conn:
        assert scalar(conn, "select count(*) from pg_namespace where nspname = 'ops'") == 0
    assert run("init", "started").stdout.startswith("Started a state directory")
    assert run("schema", "--out", "schemas").returncode == 0
    assert re.search(r"\$id", (tmp_path / "schemas/ops-reconciler.json").read_text())
