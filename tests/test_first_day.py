"""A platform team's first day: `reconcile init`, a repository laid out like a real Odoo
project as the state directory, `reconcile export` of a database filled by SQL, the editor
schemas, history with who applied, completion and the small courtesies of the command."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.cli import Result, reconcile
from tests.gitrepo import Repo
from tests.helpers import scalar
from tests.test_broken_inputs import FILES, MUTATIONS, replaced

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# The seed's own test data (its "Concurrency Test"), statement for statement; the seed notes
# the ids by hand, the test substitutes them for the placeholders.
SEED_PROJECT = """insert into ops.projects (workspace_key, slug, name, odoo_version)
values ('test_workspace', 'test-project', 'Test Project', '19.0')
returning id"""
SEED_WORKFLOW = """insert into ops.workflows (project_id, workflow_type, name)
values ('<project_id>', 'build', 'Test Build')
returning id"""
SEED_RUNS = """insert into ops.runs (project_id, workflow_id, status)
select '<project_id>', '<workflow_id>', 'queued'
from generate_series(1, 5)"""
SEED_CLAIMS = [f"select ops.claim_next_run('worker-00{i}')" for i in (1, 2, 3)]


def cli(*args: str, db_url: str | None = None, cwd_env: dict[str, str] | None = None) -> Result:
    extra = ["--database-url", db_url] if db_url else []
    return reconcile(*args, *extra, env=cwd_env)


def test_init_then_validate_and_plan(tmp_path: Path, db_url: str) -> None:
    folder = tmp_path / "ops-state"
    done = cli("init", str(folder))
    assert done.code == 0, done.stderr
    valid = cli("validate", "-C", str(folder))
    assert valid.code == 0 and valid.stderr == "", valid.stderr
    planned = cli("plan", "-C", str(folder), db_url=db_url)
    assert planned.code == 0 and planned.stderr == "", planned.stderr
    assert "+ project sample-erp" in planned.stdout
    for workflow in (folder / ".github" / "workflows").glob("*.yml"):
        assert "ops-reconciler @ git+https://github.com/" in workflow.read_text()
    again = cli("init", str(folder))
    assert again.code == 1 and "already has state files" in again.stderr


def test_the_sample_files_modeline_names_the_combined_schema(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path)).code == 0
    first = (tmp_path / "projects/sample-erp.yaml").read_text().splitlines()[0]
    schema = first.removeprefix("# yaml-language-server: $schema=")
    assert (tmp_path / "projects" / schema).resolve() == tmp_path / ".schemas/ops-reconciler.json"


ODOO_REPOSITORY = {
    "addons/acme_sale/__manifest__.py": "{'name': 'ACME Sale', 'depends': ['sale']}\n",
    "addons/acme_sale/__init__.py": "",
    "addons/acme_sale/data/cron.xml": "<odoo/>\n",
    "addons/acme_sale/static/description/config.yml": "not: [a state file\n",
    "docker-compose.yml": "services:\n  odoo:\n    image: odoo:18.0\n",
    "docker-compose.override.yaml": "services: {}\n",
    "config/odoo.conf": "[options]\n",
    ".pre-commit-config.yaml": "repos: []\n",
    ".github/workflows/ci.yml": "on: push\njobs: {}\n",
    ".github/dependabot.yml": "version: 2\n",
    ".gitlab-ci.yml": "stages: [test]\n",
    "requirements.txt": "odoo-test-helper\n",
    ".reconcileignore": "# not state files\ndocker-compose*.y*ml\naddons/\nconfig/\n",
    "ops/project.yaml": (ROOT / "examples/projects/projects/acme-erp.yaml").read_text(),
    "ops/tools.yml": (ROOT / "examples/projects/catalog/tools.yaml").read_text(),
}


def test_an_odoo_repository_is_its_own_state_directory(tmp_path: Path, db_url: str) -> None:
    repo = Repo(tmp_path / "acme-odoo")
    for relative, text in ODOO_REPOSITORY.items():
        repo.write(relative, text)
    repo.commit("an Odoo project with its ops state")
    valid = cli("validate", "-C", str(repo.root))
    assert valid.code == 0, valid.stderr
    assert valid.stdout.startswith("2 file(s), ")
    planned = cli("plan", "-C", str(repo.root), "-o", "json", db_url=db_url)
    assert planned.code == 0 and json.loads(planned.stdout)["summary"]["create"] > 0
    applied = cli("apply", "-C", str(repo.root), "--yes", db_url=db_url)
    assert applied.code == 0, applied.stderr
    assert "No changes." in cli("plan", "-C", str(repo.root), db_url=db_url).stdout
    repo.remove(".reconcileignore")  # the ignore file is what keeps the compose file out
    without = cli("validate", "-C", str(repo.root))
    assert without.code == 1 and "docker-compose.yml:1:1: E103" in without.stderr


def fill_with_the_seeds_statements(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = str(scalar(conn, SEED_PROJECT))
        workflow = str(scalar(conn, SEED_WORKFLOW.replace("<project_id>", project)))
        conn.execute(
            SEED_RUNS.replace("<project_id>", project).replace("<workflow_id>", workflow).encode()
        )
        for claim in SEED_CLAIMS:
            conn.execute(claim.encode())


def test_export_round_trip_of_the_seeds_data(tmp_path: Path, db_url: str) -> None:
    fill_with_the_seeds_statements(db_url)
    folder = tmp_path / "exported"
    exported = cli("export", "-C", str(folder), db_url=db_url)
    assert exported.code == 0, exported.stderr
    document = yaml.safe_load((folder / "projects/test-project.yaml").read_text())
    assert document["workflows"] == [{"type": "build", "name": "Test Build"}]
    assert cli("validate", "-C", str(folder)).code == 0
    planned = cli("plan", "-C", str(folder), "--adopt", "-o", "json", db_url=db_url)
    assert {c["action"] for c in json.loads(planned.stdout)["changes"]} == {"adopt"}
    assert cli("apply", "-C", str(folder), "--adopt", "--yes", db_url=db_url).code == 0
    after = cli("plan", "-C", str(folder), db_url=db_url)
    assert after.code == 0 and after.stdout.splitlines()[-1].startswith("No changes.")
    again = cli("export", "-C", str(folder), db_url=db_url)
    assert again.code == 1 and "already has state files" in again.stderr


def test_export_of_one_project(tmp_path: Path, db_url: str) -> None:
    repo = Repo(tmp_path / "fleet")
    repo.copy_examples()
    repo.commit("fleet")
    assert cli("apply", "-C", str(repo.root), "--yes", db_url=db_url).code == 0
    folder = tmp_path / "one"
    assert cli("export", "-C", str(folder), "--project", "acme-erp", db_url=db_url).code == 0
    assert sorted(p.name for p in folder.rglob("*.yaml")) == ["acme-erp.yaml"]
    planned = cli("plan", "-C", str(folder), "--project", "acme-erp", db_url=db_url)
    assert planned.stdout.splitlines()[-1].startswith("No changes."), planned.stdout
    unknown = cli("export", "-C", str(tmp_path / "x"), "--project", "nope", db_url=db_url)
    assert unknown.code == 1 and "--project nope" in unknown.stderr


def test_project_limits_apply_to_that_project(tmp_path: Path, db_url: str) -> None:
    repo = Repo(tmp_path / "fleet")
    repo.copy_examples()
    repo.commit("fleet")
    assert cli("apply", "-C", str(repo.root), "--yes", db_url=db_url).code == 0
    repo.remove("projects/globex-shop.yaml")
    repo.remove("projects/initech-hr.yaml")
    repo.commit("two projects leave")
    scoped = cli("apply", "-C", str(repo.root), "--yes", "--project", "globex-shop", db_url=db_url)
    assert scoped.code == 0, scoped.stderr
    with psycopg.connect(db_url) as conn:
        archived = conn.execute("select slug from ops.projects where status = 'archived'")
        assert [s for (s,) in archived] == ["globex-shop"]


def split_documents(files: list[Path], into: Path) -> list[Path]:
    """check-jsonschema reads one YAML document per file: each document, a file of its own
    (its text as written: `on:` stays a string in YAML 1.2, as check-jsonschema reads it)."""
    found = []
    for path in files:
        for i, document in enumerate(re.split(r"(?m)^---$", path.read_text())):
            target = into / f"{path.stem}-{i}.yaml"
            target.write_text(document)
            found.append(target)
    return found


def check_jsonschema(schema: Path, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(schema), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "no_proxy": "*"},
    )


def test_the_combined_schema_checks_user_files(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    written = cli("schema", "--out", str(out))
    assert written.code == 0, written.stderr
    combined = out / "ops-reconciler.json"
    examples = sorted((ROOT / "examples").rglob("*.yaml"))
    (tmp_path / "good").mkdir()
    good = check_jsonschema(combined, split_documents(examples, tmp_path / "good"))
    assert good.returncode == 0, good.stdout + good.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    cases = []
    for name, base, at, text, _line, code in MUTATIONS:
        if not code.startswith("E11"):  # schema problems (the rest are YAML or cross-file)
            continue
        path = broken / f"{name}.yaml"
        path.write_text(replaced(base, at, text))
        cases.append(path)
    assert len(cases) >= 20 and FILES
    passed = [p.name for p in cases if check_jsonschema(combined, [p]).returncode == 0]
    # check-jsonschema reads YAML 1.2, where `yes` and `2024-01-01` are strings; reconcile
    # reads them as YAML 1.1 does (a boolean, a date) and refuses them (E111) in validate.
    assert passed == ["slug-bool.yaml", "date-as-version.yaml"]


def test_history_records_the_ci_actor_and_shows_an_apply(tmp_path: Path, db_url: str) -> None:
    repo = Repo(tmp_path / "fleet")
    repo.copy_examples()
    repo.commit("fleet")
    env = {"GITHUB_ACTOR": "octo-deployer"}
    assert cli("apply", "-C", str(repo.root), "--yes", db_url=db_url, cwd_env=env).code == 0
    listed = json.loads(cli("history", "-o", "json", db_url=db_url).stdout)
    assert listed[0]["actor"] == "octo-deployer" and listed[0]["applied_by"] == "postgres"
    shown = cli("history", "show", listed[0]["id"][:8], db_url=db_url)
    assert shown.code == 0, shown.stderr
    assert "by: octo-deployer (database role postgres)" in shown.stdout
    assert "+ project acme-erp" in shown.stdout
    unknown = cli("history", "show", "ffffffff", db_url=db_url)
    assert unknown.code == 1 and unknown.stderr.count("\n") == 1


def test_bash_completion_completes_commands_and_options() -> None:
    script = cli("completion", "bash")
    assert script.code == 0 and "_RECONCILE_COMPLETE=bash_complete" in script.stdout
    env = {"_RECONCILE_COMPLETE": "bash_complete", "COMP_WORDS": "reconcile pl", "COMP_CWORD": "1"}
    assert "plain,plan" in reconcile(env=env).stdout.split()
    env.update(COMP_WORDS="reconcile plan --ma", COMP_CWORD="2")
    said = reconcile(env=env).stdout.split()
    assert {"plain,--max-prune", "plain,--markdown-limit"} <= set(said)


def test_the_small_ones(tmp_path: Path, db_url: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = cli("validate", "-C", str(empty))
    assert nothing.code == 1 and "no state files" in nothing.stderr
    repo = Repo(tmp_path / "fleet")
    repo.copy_examples()
    repo.commit("fleet")
    out = tmp_path / "plan.json"
    saved = cli("plan", "-C", str(repo.root), "--out", str(out), db_url=db_url)
    assert f"Saved the plan to {out}" in saved.stderr and out.exists()
    assert cli("apply", "-C", str(repo.root), "--yes", db_url=db_url).code == 0
    unchanged = cli("plan", "-C", str(repo.root), db_url=db_url).stdout.splitlines()
    assert unchanged[-1].startswith("No changes.") and unchanged[0].startswith("Database: ")
    same = cli("diff", "-C", str(repo.root), "--base", "HEAD", "--head", "HEAD")
    assert same.stdout.strip() == "No changes in the files." and "database" not in same.stdout
    repo.git("checkout", "-q", "-b", "feature/bump")
    repo.write("catalog/tools.yaml", (repo.root / "catalog/tools.yaml").read_text() + "\n")
    repo.commit("touch")
    markdown = cli("diff", "-C", str(repo.root), "--base", "main", "--head", "HEAD", "-omarkdown")
    assert "on `feature/bump`" in markdown.stdout and "`HEAD`" not in markdown.stdout
    invalid = tmp_path / "invalid"
    invalid.mkdir()
    (invalid / "x.yaml").write_text("apiVersion: ops/v1\nkind: Tool\nname: odoo\n")
    as_json = cli("validate", "-C", str(invalid), "-o", "json")
    problems = json.loads(as_json.stdout)["problems"]
    assert as_json.code == 1 and problems[0]["file"] == "x.yaml" and problems[0]["code"] == "E110"


def test_diff_never_speaks_of_drift(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "fleet")
    repo.copy_examples()
    repo.commit("fleet")
    text = (repo.root / "projects/acme-erp.yaml").read_text()
    repo.write("projects/acme-erp.yaml", text.replace("name: ACME ERP", "name: ACME"))
    repo.commit("rename")
    for output in ("text", "json", "markdown"):
        done = cli("diff", "-C", str(repo.root), "--base", "HEAD~1", "-o", output)
        shown = '"key": "acme-erp"' if output == "json" else "~ project acme-erp"
        assert done.code == 0 and shown in done.stdout
        assert "drift" not in done.stdout, output


@pytest.fixture
def embedded_state() -> Iterator[Path]:
    """A state directory for an embedded server of this test's own (one the server user can
    enter when run as root); the server stops when the last command has exited."""
    folder = Path(tempfile.mkdtemp(prefix="embedded-"))
    folder.chmod(0o755)
    yield folder
    for _ in range(200):
        if not list(folder.glob("pg*/data/postmaster.pid")):
            break
        time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


def test_each_repository_has_its_own_embedded_database(
    tmp_path: Path, embedded_state: Path
) -> None:
    env = {"RECONCILE_STATE_DIR": str(embedded_state), "RECONCILE_CACHE_DIR": str(tmp_path)}
    first = Repo(tmp_path / "first")
    first.copy_examples()
    first.commit("fleet")
    second = tmp_path / "second"
    assert cli("init", str(second)).code == 0
    assert cli("apply", "-C", str(first.root), "--yes", cwd_env=env).code == 0
    planned = cli("plan", "-C", str(second), cwd_env=env)
    assert planned.code == 0, planned.stderr
    assert "acme-erp" not in planned.stdout and "+ project sample-erp" in planned.stdout
    assert f"of {second}" in planned.stdout.splitlines()[0]
    status = cli("db", "status", "-C", str(first.root), "-o", "json", cwd_env=env)
    assert json.loads(status.stdout)["database"].endswith(f"of {first.root}")


def test_progress_shows_on_a_terminal_only(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    tool = "apiVersion: ops/v1\nkind: Tool\nname: t{i}\nversion: '1'\ndocker_image: x:{i}\n"
    for i in range(6000):
        (folder / f"t{i}.yaml").write_text(tool.format(i=i))
    piped = cli("validate", "-C", str(folder), "--no-cache")
    assert piped.code == 0 and piped.stderr == ""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "validate", "-C", str(folder), "--no-cache"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**env, "TERM": "xterm"},
    )
    os.close(follower)
    seen = b""
    try:
        while chunk := os.read(leader, 4096):
            seen += chunk
    except OSError:
        pass
    assert process.wait(timeout=120) == 0
    if time.monotonic() - started > 3:  # the line appears after a second of parsing only
        assert b"parsing files: " in seen


def test_diff_skips_hidden_and_ignored_files_in_a_subfolder(tmp_path: Path) -> None:
    """At a git ref as on disk: the state directory's .reconcileignore and hidden files."""
    repo = Repo(tmp_path / "odoo")
    repo.write("ops/tools.yaml", (ROOT / "examples/projects/catalog/tools.yaml").read_text())
    repo.write("ops/.reconcileignore", "compose.yml\n")
    repo.commit("base")
    repo.git("branch", "base")
    repo.write("ops/compose.yml", "services: {}\n")
    repo.write("ops/.pre-commit-config.yaml", "repos: []\n")
    text = (repo.root / "ops/tools.yaml").read_text()
    repo.write("ops/tools.yaml", text.replace("nginx:1.27-alpine", "nginx:1.28-alpine"))
    repo.commit("bump nginx")
    done = cli("diff", "-C", str(repo.root / "ops"), "--base", "base", "--head", "HEAD")
    assert done.code == 0, done.stderr
    assert "~ tool nginx@1.27" in done.stdout and "E103" not in done.stderr
