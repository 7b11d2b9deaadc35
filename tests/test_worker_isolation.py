"""A step cannot reach the worker's credentials or state, nor another workflow's secrets
(issue 9): environment, /proc of the worker (environ, cmdline, mem), ptrace, the worker's
files (secrets file, state, the parse cache of `reconcile`, artifact store, mirrors), the
processes of a run beside it. With both executors, on the real `reconcile worker`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from tests.containers import busybox_image
from tests.helpers import make_project

pytestmark = pytest.mark.slow
DB_PASSWORD = "db-pa55word-of-the-worker"
SECRET_A = "alpha-secret-value-0001"
SECRET_B = "bravo-secret-value-0002"
CACHE_MARK = "parse-cache-content-0003"
STATE_MARK = "state-dir-content-0004"

PROBE = r"""
echo "probe: environment"; env
echo "probe: every process"; for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
  cat "$f" 2>/dev/null | tr '\000' '\n'; done
W={worker}
echo "probe: the worker"; cat /proc/$W/environ /proc/$W/cmdline 2>&1 | tr '\000' '\n'
dd if=/proc/$W/mem bs=1 count=64 skip=4194304 2>&1 | head -c 200; echo
echo "probe: parent"; cat /proc/$PPID/environ 2>&1 | tr '\000' '\n'
echo "probe: files"; for p in {files}; do echo "$p:"; cat "$p" 2>&1; ls -la "$p" 2>&1; done
grep -r -a -h -e alpha-secret -e db-pa55 -e parse-cache-content -e state-dir-content \
  {dirs} 2>&1 | head -20
if command -v python3 >/dev/null; then python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.ptrace(16, int(sys.argv[1]), 0, 0), ctypes.get_errno())' $W; fi
echo "probe: done"
"""


@pytest.mark.parametrize("executor", ["process", "podman"])
def test_a_step_reaches_nothing_of_the_worker_nor_other_workflows(
    executor: str, tmp_path: Path, db_url: str
) -> None:
    tool = None
    if executor == "podman":
        tool = "busybox@1"
        image = busybox_image()
    state, cache = tmp_path / "state", tmp_path / "cache"
    for folder, mark in ((state, STATE_MARK), (cache, CACHE_MARK)):
        folder.mkdir()
        (folder / "data").write_text(mark)
    secrets = tmp_path / "worker-secrets.env"
    secrets.write_text(f"SECRET_A={SECRET_A}\nSECRET_B={SECRET_B}\n")
    secrets.chmod(0o600)
    artifacts, mirrors = tmp_path / "artifacts", tmp_path / "mirrors"
    url = make_conninfo(db_url, password=DB_PASSWORD)
    files = [secrets, state / "data", cache / "data", Path.home() / ".bash_history"]
    dirs = [state, cache, artifacts, mirrors, tmp_path, Path.home()]

    with psycopg.connect(db_url) as conn:
        if tool:
            conn.execute(
                "insert into ops.tools (tool_name, version, docker_image) "
                "values ('busybox', '1', %s)",
                (image,),
            )
        project = make_project(conn)
        holding: dict[str, Any] = {"steps": ["echo $SECRET_A; sleep 4"], "secrets": ["SECRET_A"]}
        holder = enqueue(conn, project, "holder", {**holding, **({"tool": tool} if tool else {})})
        conn.commit()
        worker = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "worker", "--once", "--concurrency", "2",
             "--executor", executor, "--secrets-file", str(secrets), "--artifacts-dir",
             str(artifacts), "--mirrors-dir", str(mirrors), "--poll", "0.2"],
            env={
                **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
                "DATABASE_URL": url,
                "RECONCILE_STATE_DIR": str(state),
                "RECONCILE_CACHE_DIR": str(cache),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        probe = PROBE.format(
            worker=worker.pid,
            files=" ".join(map(str, files)),
            dirs=" ".join(map(str, dirs)),
        )
        config: dict[str, Any] = {"steps": ["sleep 1", probe], "secrets": ["SECRET_B"]}
        if tool:
            config["tool"] = tool
        prober = enqueue(conn, project, "prober", config)
        conn.commit()
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        results = dict(
            conn.execute(
                "select id, json_build_array(status, error_message) from ops.runs"
            ).fetchall()
        )
        assert results[holder] == ["succeeded", None], out
        assert results[prober] == ["succeeded", None], out
        logs = [
            r[0]
            for r in conn.execute(
                "select message from ops.run_logs where run_id in (%s, %s)", (holder, prober)
            )
        ]
    text = "\n".join(logs)
    assert "probe: done" in text  # the probe ran to its end
    assert "***" in logs  # the holder's own secret, masked
    for leaked in (DB_PASSWORD, SECRET_A, SECRET_B, CACHE_MARK, STATE_MARK):
        assert leaked not in text, leaked
    assert conninfo_to_dict(url)["password"] not in text
    if executor == "process":
        assert any(line.startswith("ptrace -1 ") for line in logs)


def enqueue(conn: psycopg.Connection[Any], project: Any, name: str, config: dict[str, Any]) -> Any:
    workflow = conn.execute(
        "insert into ops.workflows (project_id, workflow_type, name, config) "
        "values (%s, 'test', %s, %s) returning id",
        (project, name, Jsonb(config)),
    ).fetchone()
    assert workflow is not None
    row = conn.execute(
        "insert into ops.runs (project_id, workflow_id) values (%s, %s) returning id",
        (project, workflow[0]),
    ).fetchone()
    assert row is not None
    return row[0]
