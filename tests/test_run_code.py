"""The code a run checks out, recorded when `reconcile apply` enqueues it: the state repository
(where it lives) or a project's own code repository (keyed by its head, once per commit).
Real git repositories, the real command, a real server; then the worker's side: the claim
names them and the checkout gives that commit's files."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from reconciler.checkout import materialize
from tests.cli import Result, reconcile
from tests.gitrepo import Repo
from tests.helpers import make_project, make_user, make_workflow, scalar

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]
LOCATION_VARIABLES = (
    "RECONCILE_REPOSITORY_URL",
    "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
    "CI_PROJECT_URL",
)

INFRA = """\
apiVersion: ops/v1
kind: Project
slug: infra
workspace_key: infra
name: Infra
odoo_version: "18.0"
workflows:
  - {type: build, name: build, on: [push], config: {steps: ["./scripts/build.sh"]}}
"""

SHOP = """\
apiVersion: ops/v1
kind: Project
slug: shop
workspace_key: shop
name: Shop
odoo_version: "18.0"
repository: {url}
workflows:
  - {{type: build, name: build-main, git_ref: main, on: [push]}}
  - {{type: test, name: default-branch, on: [push]}}
  - {{type: deploy, name: manual}}
"""


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say where the repository lives; a CI running them must not."""
    for name in LOCATION_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def code(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "code")
    repo.write("addons/shop/__manifest__.py", "{'name': 'shop', 'version': '1'}\n")
    repo.write("scripts/build.sh", "#!/bin/sh\necho one\n")
    repo.commit("one")
    return repo


@pytest.fixture
def code_url(code: Repo) -> Iterator[str]:
    """The code repository served by a real git server (`git daemon`, the git:// protocol):
    the files refuse local paths for a project's repository."""
    port = _closed_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
         f"--base-path={code.root.parent}", str(code.root.parent)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(port)
        yield f"git://127.0.0.1:{port}/{code.root.name}"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def state_repo(tmp_path: Path, *documents: str) -> Repo:
    repo = Repo(tmp_path / "state")
    repo.write("scripts/build.sh", "#!/bin/sh\necho state\n")
    for i, text in enumerate(documents):
        repo.write(f"fleet/{i}.yaml", text)
    repo.commit("fleet")
    return repo


def apply(repo: Repo, db_url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    done = reconcile(
        "apply",
        "--yes",
        "--output",
        "json",
        *args,
        "-C",
        str(repo.root / "fleet"),
        "--database-url",
        db_url,
        env={"RECONCILE_CACHE_DIR": str(repo.root.parent / "cache"), **(env or {})},
    )
    assert done.code == 0, done.stderr
    return done


def runs(db_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select w.name, r.idempotency_key, r.repository_url, r.commit_sha, r.metadata "
            "from ops.runs r join ops.workflows w on w.id = r.workflow_id order by r.created_at"
        ).fetchall()
    names = ("workflow", "key", "repository_url", "commit_sha", "metadata")
    return [dict(zip(names, row, strict=True)) for row in rows]


def test_without_a_repository_the_run_names_the_state_repository_folder(
    tmp_path: Path, db_url: str
) -> None:
    state = state_repo(tmp_path, INFRA)
    apply(state, db_url)
    head = state.git("rev-parse", "HEAD")
    assert runs(db_url) == [
        {
            "workflow": "build",
            "key": f"push:{head}:infra/build/build",
            "repository_url": str(state.root.resolve()),
            "commit_sha": head,
            "metadata": {
                "commit": head,
                "ref": "main",
                "trigger": "push",
                "workflow": "infra/build/build",
            },
        }
    ]


@pytest.mark.parametrize(
    ("origin", "env", "recorded"),
    [
        (
            "https://gitlab-ci-token:glcbt-s3cret@gitlab.example.com/acme/fleet.git",
            {},
            "https://gitlab.example.com/acme/fleet.git",
        ),
        ("git@github.com:acme/fleet.git", {}, "git@github.com:acme/fleet.git"),
        (
            "https://x-access-token:ghs_s3cret@github.com/acme/fleet",
            {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/fleet"},
            "https://github.com/acme/fleet.git",
        ),
        (
            None,
            {"CI_PROJECT_URL": "https://gitlab.example.com/acme/fleet"},
            "https://gitlab.example.com/acme/fleet.git",
        ),
        (
            "https://example.com/mirror.git",
            {"RECONCILE_REPOSITORY_URL": "ssh://git@git.internal/acme/fleet.git"},
            "ssh://git@git.internal/acme/fleet.git",
        ),
    ],
)
def test_where_the_state_repository_lives_never_with_credentials(
    origin: str | None, env: dict[str, str], recorded: str, tmp_path: Path, db_url: str
) -> None:
    state = state_repo(tmp_path, INFRA)
    if origin:
        state.git("remote", "add", "origin", origin)
    done = apply(state, db_url, env=env)
    assert [r["repository_url"] for r in runs(db_url)] == [recorded]
    assert "s3cret" not in done.stdout + done.stderr


def test_a_refused_repository_variable_is_one_clear_line(tmp_path: Path, db_url: str) -> None:
    state = state_repo(tmp_path, INFRA)
    done = reconcile(
        "plan",
        "-C",
        str(state.root / "fleet"),
        "--database-url",
        db_url,
        env={"RECONCILE_REPOSITORY_URL": "ext::sh -c touch% /tmp/x"},
    )
    assert done.code == 1
    assert done.stderr.strip().splitlines() == [
        "error: RECONCILE_REPOSITORY_URL is refused: remote helpers (`transport::address`, "
        "e.g. ext::) are not allowed"
    ]


def test_a_code_repository_runs_once_per_commit_of_its_branch(
    code: Repo, code_url: str, tmp_path: Path, db_url: str
) -> None:
    url = code_url
    state = state_repo(tmp_path, SHOP.format(url=url), INFRA)
    first = code.git("rev-parse", "HEAD")
    plan = json.loads(apply(state, db_url).stdout)
    shop_runs = [r for r in plan["runs"] if r["project"] == "shop"]
    assert shop_runs == [
        {
            "project": "shop",
            "workflow": f"shop/{kind}/{name}",
            "idempotency_key": f"push:{first}:shop/{kind}/{name}",
            "action": "enqueue",
            "commit": first,
            "repository": url,
            "ref": ref,
        }
        for kind, name, ref in (("build", "build-main", "main"), ("test", "default-branch", None))
    ]
    recorded = {r["workflow"]: r for r in runs(db_url)}
    assert recorded["build-main"]["repository_url"] == url
    assert recorded["build-main"]["commit_sha"] == first
    assert recorded["build-main"]["metadata"]["state_commit"] == state.git("rev-parse", "HEAD")
    assert recorded["build"]["repository_url"] == str(state.root.resolve())  # infra: state repo

    # applies of other state commits, with the code unchanged: nothing new for the shop
    state.write("fleet/extra.yaml", INFRA.replace("infra", "infra2"))
    state.commit("another project")
    apply(state, db_url)
    assert sorted(r["workflow"] for r in runs(db_url)) == [
        "build",  # infra, first state commit
        "build",  # infra, second state commit
        "build",  # infra2
        "build-main",
        "default-branch",
    ]

    # a new commit of the code: once, however many applies see it
    code.write("addons/shop/models.py", "# two\n")
    second = code.commit("two")
    apply(state, db_url)
    apply(state, db_url)
    new = [r for r in runs(db_url) if r["commit_sha"] == second]
    assert sorted(r["key"] for r in new) == [
        f"push:{second}:shop/build/build-main",
        f"push:{second}:shop/test/default-branch",
    ]


def test_a_branch_other_than_the_default_one(
    code: Repo, code_url: str, tmp_path: Path, db_url: str
) -> None:
    code.git("checkout", "-q", "-b", "release")
    code.write("RELEASE", "1\n")
    release = code.commit("release")
    code.git("checkout", "-q", "main")
    shop = SHOP.format(url=code_url).replace("git_ref: main", "git_ref: release")
    apply(state_repo(tmp_path, shop), db_url)
    commits = {r["workflow"]: r["commit_sha"] for r in runs(db_url)}
    assert commits == {"build-main": release, "default-branch": code.git("rev-parse", "main")}


def test_an_unreachable_code_repository_skips_its_runs_with_the_reason(
    tmp_path: Path, db_url: str
) -> None:
    url = f"https://127.0.0.1:{_closed_port()}/shop.git"
    state = state_repo(tmp_path, SHOP.format(url=url), INFRA)
    plan = json.loads(apply(state, db_url).stdout)
    skipped = [r for r in plan["runs"] if r["project"] == "shop"]
    assert [r["action"] for r in skipped] == ["skip", "skip"]
    assert skipped[0]["reason"].startswith(f"cannot reach {url}: ")
    assert [r["workflow"] for r in runs(db_url)] == ["build"]  # the rest of the apply went on


def test_the_claim_names_the_code_and_the_checkout_gives_its_files(
    code: Repo, code_url: str, tmp_path: Path, db_url: str
) -> None:
    url = code_url
    state = state_repo(tmp_path, SHOP.format(url=url).replace("  - {type: test", "  #"))
    apply(state, db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        claim = scalar(conn, "select ops.claim_run('w1', 30, true)")
    assert (claim["repository_url"], claim["commit_sha"]) == (url, code.git("rev-parse", "HEAD"))
    workspace = tmp_path / "workspace"
    materialize(claim["repository_url"], claim["commit_sha"], workspace, tmp_path / "mirrors")
    assert (workspace / "scripts/build.sh").read_text() == "#!/bin/sh\necho one\n"


def test_a_project_repository_is_stored_and_can_be_removed(tmp_path: Path, db_url: str) -> None:
    url = "https://git.example.com/acme/shop.git"
    state = state_repo(tmp_path, SHOP.format(url=url))

    def stored() -> Any:
        with psycopg.connect(db_url) as conn:
            return scalar(conn, "select repository from ops.projects where slug = 'shop'")

    apply(state, db_url)
    assert stored() == url
    state.write("fleet/0.yaml", SHOP.format(url=url).replace(f"repository: {url}\n", ""))
    state.commit("the code moves into the state repository")
    plan = json.loads(apply(state, db_url).stdout)
    assert [(c["key"], c["fields"]) for c in plan["changes"]] == [("shop", ["repository"])]
    assert stored() is None


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("ext::sh -c touch% /tmp/pwned", "is refused: remote helpers"),
        ("--upload-pack=touch /tmp/pwned", "is refused: it is empty or starts with '-'"),
        ("http://example.com/shop.git", "is refused: transport 'http' is not allowed"),
        ("/srv/git/shop.git", "is refused: a local path would be read from the workers' own"),
        ("file:///var/lib/worker/mirrors/x.git", "is refused: a local path would be read"),
        (
            "https://deploy:tok3n@example.com/shop.git",
            "'https://deploy:***@example.com/shop.git' holds a credential",
        ),
        ("https://ghp_tok3n@github.com/acme/shop", "'https://***@github.com/acme/shop' holds"),
    ],
)
def test_the_files_refuse_a_hostile_or_secret_repository(
    written: str, message: str, tmp_path: Path
) -> None:
    state = state_repo(tmp_path, SHOP.format(url=json.dumps(written)))
    done = reconcile("validate", "-C", str(state.root / "fleet"))
    assert done.code == 1
    problems = [line for line in done.stderr.splitlines() if " E113 " in line]
    assert len(problems) == 1
    assert problems[0].startswith("0.yaml:7:13: E113 repository: ")
    assert message in problems[0]
    assert "tok3n" not in done.stderr


def test_the_files_refuse_a_git_ref_git_would_not_accept(tmp_path: Path) -> None:
    shop = SHOP.format(url="https://example.com/shop.git").replace(
        "git_ref: main", 'git_ref: "--upload-pack=touch /tmp/pwned"'
    )
    done = reconcile("validate", "-C", str(state_repo(tmp_path, shop).root / "fleet"))
    assert done.code == 1
    assert "0.yaml:9:46: E113 workflows.0.git_ref: '--upload-pack=touch /tmp/pwned' is not a " in (
        done.stderr
    )


def test_the_database_refuses_credentials_and_non_hex_commits(conn: Conn) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    insert = (
        "insert into ops.runs (project_id, workflow_id, repository_url, commit_sha) "
        "values (%s, %s, %s, %s)"
    )
    for url, sha in (
        ("https://u:pw@h/r.git", "a" * 40),
        ("https://token@h/r.git", "a" * 40),
        ("ext::sh -c x", "a" * 40),
        ("-oProxyCommand=x", "a" * 40),
        ("https://h/r.git", "HEAD"),
        ("https://h/r.git", "--upload-pack=x"),
    ):
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(insert, (project, workflow, url, sha))
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute(
            "update ops.projects set repository = 'https://u:pw@h/r' where id = %s", (project,)
        )


def test_a_member_started_run_takes_the_project_repository_never_its_own(conn: Conn) -> None:
    project = make_project(conn)
    conn.execute(
        "update ops.projects set repository = 'https://h/shop.git' where id = %s", (project,)
    )
    workflow = make_workflow(conn, project)
    user = make_user(conn, "dev@example.com")
    conn.execute(
        "insert into ops.project_memberships (project_id, user_id, role) "
        "values (%s, %s, 'developer')",
        (project, user),
    )
    sha = "b" * 40
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(user),))
        conn.execute(
            "insert into ops.runs (project_id, workflow_id, idempotency_key, metadata) "
            "values (%s, %s, %s, %s)",
            # push: keys are the apply's (0011): a member keys a run of their own otherwise
            (project, workflow, f"manual:{sha}", Jsonb({"commit": sha})),
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(
                "insert into ops.runs (project_id, workflow_id, repository_url) "
                "values (%s, %s, %s)",
                (project, workflow, "https://evil.example.com/x.git"),
            )
    assert conn.execute("select repository_url, commit_sha from ops.runs").fetchall() == [
        ("https://h/shop.git", sha)
    ]


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"git daemon did not listen on {port}")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_workflow_of_a_project_only_the_database_holds_uses_its_repository(
    code: Repo, code_url: str, tmp_path: Path, db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        project = make_project(conn, "legacy")
        conn.execute("update ops.projects set repository = %s where id = %s", (code_url, project))
    workflow = (
        "apiVersion: ops/v1\nkind: Workflow\nproject: legacy\ntype: build\nname: build\n"
        "on: [push]\n"
    )
    apply(state_repo(tmp_path, workflow), db_url)
    head = code.git("rev-parse", "HEAD")
    assert [(r["key"], r["repository_url"]) for r in runs(db_url)] == [
        (f"push:{head}:legacy/build/build", code_url)
    ]
