"""Runs do the real job (issue 9): a real git repository with an addons folder and a build
script, two commits applied, the real `reconcile worker` checks each run's commit out of its
mirror and builds it, as a sandboxed process and in a container of a locally built image; each
run sees its own commit's files and its artifact's checksum is that of the file built from it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.cli import Result, reconcile
from tests.containers import busybox_image, containers_named
from tests.gitrepo import Repo
from tests.helpers import make_project

pytestmark = pytest.mark.slow
LEASE_S = 4

FLEET = """\
apiVersion: ops/v1
kind: Tool
name: busybox
version: "1"
docker_image: {image}
---
apiVersion: ops/v1
kind: Project
slug: shop
workspace_key: shop
name: Shop
odoo_version: "18.0"
workflows:
  - type: build
    name: as-process
    on: [push]
    config: {{steps: ["./scripts/build.sh"], artifacts: ["dist/*.txt"]}}
  - type: test
    name: in-container
    on: [push]
    config:
      tool: busybox@1
      steps: ["./scripts/build.sh", "test \\"$(pwd)\\" = /workspace"]
      artifacts: ["dist/*.txt"]
      limits: {{cpus: 1, memory: 64m, network: none}}
"""
BUILD = """\
#!/bin/sh
set -e
mkdir -p dist
cat VERSION addons/shop/__manifest__.py addons/shop/models.py > dist/bundle.txt
echo "built $(cat VERSION) as $(id -u)"
"""


def bundle(version: str) -> bytes:
    return (
        f"{version}\n".encode()
        + f"{{'name': 'shop', 'version': '{version}'}}\n".encode()
        + f"# models of {version}\n".encode()
    )


def write_commit(repo: Repo, version: str) -> str:
    repo.write("VERSION", f"{version}\n")
    repo.write("addons/shop/__manifest__.py", f"{{'name': 'shop', 'version': '{version}'}}\n")
    repo.write("addons/shop/models.py", f"# models of {version}\n")
    return repo.commit(version)


def apply(repo: Repo, db_url: str) -> None:
    done = reconcile(
        "apply", "--yes", "-C", str(repo.root / "fleet"), "--database-url", db_url,
        env={"RECONCILE_CACHE_DIR": str(repo.root.parent / "cache")},
    )  # fmt: skip
    assert done.code == 0, done.stderr


def work(db_url: str, tmp_path: Path, *extra: str) -> Result:
    return reconcile(
        "worker", "--once", "--database-url", db_url, "--artifacts-dir",
        str(tmp_path / "artifacts"), "--mirrors-dir", str(tmp_path / "mirrors"), *extra,
        timeout=300,
    )  # fmt: skip


def test_each_run_builds_its_own_commit_in_a_process_and_in_a_container(
    tmp_path: Path, db_url: str
) -> None:
    image = busybox_image()
    repo = Repo(tmp_path / "fleet-repo")
    repo.write("fleet/shop.yaml", FLEET.format(image=image))
    repo.write("scripts/build.sh", BUILD)
    (repo.root / "scripts" / "build.sh").chmod(0o755)
    commits = {write_commit(repo, "v1"): "v1"}
    apply(repo, db_url)
    commits[write_commit(repo, "v2")] = "v2"
    apply(repo, db_url)

    done = work(db_url, tmp_path, "--executor", "podman")
    assert done.code == 0, done.stderr

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "select r.id, w.name, r.status, r.error_message, r.commit_sha, a.checksum, "
            "a.artifact_key from ops.runs r join ops.workflows w on w.id = r.workflow_id "
            "left join ops.run_artifacts a on a.run_id = r.id order by r.created_at"
        ).fetchall()
        assert len(rows) == 4
        for run_id, workflow, status, error, commit, checksum, key in rows:
            version = commits[commit]
            assert (status, error) == ("succeeded", None), (workflow, version)
            assert checksum == "sha256:" + hashlib.sha256(bundle(version)).hexdigest()
            stored = (tmp_path / "artifacts" / key).read_bytes()
            assert stored == bundle(version)
            lines = [r[0] for r in conn.execute(
                "select message from ops.run_logs where run_id = %s", (run_id,)
            )]  # fmt: skip
            assert f"built {version} as 65534" in lines  # never root, in either executor
            assert f"checked out {commit}" in lines
    # one mirror, fetched once for the burst
    assert len(list((tmp_path / "mirrors").glob("*.git"))) == 1


def test_a_tool_workflow_on_a_worker_without_containers_fails_clearly(
    tmp_path: Path, db_url: str
) -> None:
    repo = Repo(tmp_path / "fleet-repo")
    repo.write("fleet/shop.yaml", FLEET.format(image="localhost/none:1"))
    repo.write("scripts/build.sh", BUILD)
    (repo.root / "scripts" / "build.sh").chmod(0o755)
    write_commit(repo, "v1")
    apply(repo, db_url)
    done = work(db_url, tmp_path, "--executor", "process")
    assert done.code == 0, done.stderr
    with psycopg.connect(db_url) as conn:
        outcome = dict(
            conn.execute(
                "select w.name, json_build_array(r.status, r.error_message) from ops.runs r "
                "join ops.workflows w on w.id = r.workflow_id"
            ).fetchall()
        )
    assert outcome["as-process"] == ["succeeded", None]
    assert outcome["in-container"] == [
        "failed",
        "the workflow runs in busybox@1 (localhost/none:1) and this worker has no container "
        "runtime (install podman or docker, or start it with --executor podman|docker)",
    ]


def test_kill_9_of_a_worker_removes_its_container_before_the_lease_lapses(
    tmp_path: Path, db_url: str
) -> None:
    image = busybox_image()
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "insert into ops.tools (tool_name, version, docker_image) values ('busybox', '1', %s)",
            (image,),
        )
        project = make_project(conn)
        workflow = conn.execute(
            "insert into ops.workflows (project_id, workflow_type, name, config) "
            "values (%s, 'test', 'long', %s) returning id",
            (project, Jsonb({"tool": "busybox@1", "steps": ["echo started; sleep 300"]})),
        ).fetchone()
        assert workflow is not None
        run = conn.execute(
            "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
            (project, workflow[0]),
        ).fetchone()
        assert run is not None
        conn.commit()
        worker = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "worker", "--lease", str(LEASE_S), "--poll",
             "0.2", "--executor", "podman", "--database-url", db_url, "--artifacts-dir",
             str(tmp_path / "artifacts")],
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        prefix = f"ops-{run[0]}-"
        try:
            assert wait_for(lambda: bool(containers_named(prefix)), 60)
            assert wait_for(lambda: started(conn, run[0]), 30)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        assert wait_for(lambda: not containers_named(prefix), LEASE_S)
        still_leased = conn.execute(
            "select status = 'running' and lease_expires_at > now() from ops.runs where id = %s",
            (run[0],),
        ).fetchone()
        assert still_leased == (True,)  # nobody could claim it again before the container went


def started(conn: psycopg.Connection[Any], run_id: Any) -> bool:
    row = conn.execute(
        "select count(*) from ops.run_logs where run_id = %s and message = 'started'", (run_id,)
    ).fetchone()
    conn.commit()
    return bool(row and row[0])


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_example_fleet_runs_succeed_for_real(tmp_path: Path, db_url: str) -> None:
    repo = Repo(tmp_path / "fleet")
    repo.copy_examples()
    head = repo.commit("the examples")
    done = reconcile(
        "apply", "--yes", "-C", str(repo.root), "--database-url", db_url,
        env={"RECONCILE_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.code == 0, done.stderr
    worked = work(db_url, tmp_path, "--executor", "process")
    assert worked.code == 0, worked.stderr
    with psycopg.connect(db_url) as conn:
        runs = conn.execute(
            "select w.name, r.status, r.error_message, r.commit_sha from ops.runs r "
            "join ops.workflows w on w.id = r.workflow_id"
        ).fetchall()
        artifacts = conn.execute("select artifact_key, checksum from ops.run_artifacts").fetchall()
    assert len(runs) == 4
    assert {(status, error, commit) for _, status, error, commit in runs} == {
        ("succeeded", None, head)
    }
    assert sorted(key for key, _ in artifacts) == [
        "acme-erp/1/dist/acme-erp-addons.tar.gz",
        "globex-shop/1/dist/globex-shop-addons.tar.gz",
    ]
    for key, checksum in artifacts:
        content = (tmp_path / "artifacts" / key).read_bytes()
        assert checksum == "sha256:" + hashlib.sha256(content).hexdigest()
        assert content[:2] == b"\x1f\x8b"  # gzip
