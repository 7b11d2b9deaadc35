"""The worker's loop, lease and step logic on the in-memory queue (no server): fast checks of
what the database tests check end to end. Steps are real sandboxed processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from reconciler.worker import Setup, Worker, WorkerOptions
from reconciler.worker.claim import parse_claim
from reconciler.worker.queue import InMemoryQueue
from reconciler.worker.secrets import SecretsError, SecretStore, from_environment, from_file


def worker(queue: InMemoryQueue, tmp_path: Path, **options: object) -> Worker:
    settings: dict[str, object] = {
        "worker_id": "mem",
        "artifacts_dir": tmp_path / "artifacts",
        "once": True,
        "lease_s": 3,
        "poll_s": 0.1,
        **options,
    }
    secrets = SecretStore({"TOKEN": "tok-3141592653", "OTHER": "other-2718281828"})
    return Worker(queue, WorkerOptions(**settings), Setup(secrets=secrets))  # type: ignore[arg-type]


def messages(run: object) -> list[str]:
    return [line["message"] for line in run.logs]  # type: ignore[attr-defined]


def test_runs_finish_with_their_outcome_and_no_op_runs_need_no_thread(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    ok = queue.add({"steps": ["echo hi"]})
    bad = queue.add({"steps": ["exit 7"]})
    noop = queue.add({})
    worker(queue, tmp_path).run()
    assert (ok.status, ok.exit_code, messages(ok)) == ("succeeded", 0, ["$ echo hi", "hi"])
    assert (bad.status, bad.error) == ("failed", "step 1 `exit 7` exited with code 7")
    assert (noop.status, noop.logs) == ("succeeded", [])


def test_a_canceled_run_stops_within_a_heartbeat(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    run = queue.add({"steps": ["sleep 30"]})
    thread = threading.Thread(target=worker(queue, tmp_path, lease_s=1).run)
    thread.start()
    while run.status != "running":
        time.sleep(0.01)
    queue.cancel(run.run_id)
    thread.join(timeout=30)
    assert not thread.is_alive() and run.status == "canceled"


def test_a_lost_lease_stops_the_steps_and_writes_nothing_more(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    run = queue.add({"steps": ["sleep 30"]})
    thread = threading.Thread(target=worker(queue, tmp_path, lease_s=1).run)
    thread.start()
    while run.status != "running":
        time.sleep(0.01)
    with queue.lock:
        run.token = "someone-else"  # another worker took it over, with a live lease
        run.expires = time.monotonic() + 60
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert run.status == "running" and run.exit_code is None  # the worker let it go


def test_only_the_secrets_a_workflow_names_and_masked(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    run = queue.add({"steps": ['echo "token=$TOKEN other=${OTHER:-unset}"'], "secrets": ["TOKEN"]})
    missing = queue.add({"steps": ["true"], "secrets": ["NOPE"]})
    worker(queue, tmp_path).run()
    assert messages(run)[1] == "token=*** other=unset"
    assert (missing.status, missing.error) == (
        "failed",
        "secret NOPE is not configured on this worker",
    )


def test_a_bad_artifact_pattern_fails_before_any_step(tmp_path: Path) -> None:
    queue = InMemoryQueue()
    marker = tmp_path / "ran"
    run = queue.add({"steps": [f"touch {marker}"], "artifacts": ["/etc/passwd"]})
    worker(queue, tmp_path).run()
    assert run.status == "failed" and "is absolute" in str(run.error)
    assert not marker.exists()


def test_the_claim_is_parsed_once_into_a_typed_record() -> None:
    claim = parse_claim(
        {
            "run_id": "r",
            "lease_token": "t",
            "project": "p",
            "type": "build",
            "workflow": "w",
            "run_number": 3,
            "attempt": 1,
            "metadata": {"commit": "c", "ref": "main"},
            "commit_sha": "a" * 40,
            "repository_url": "https://example.com/x.git",
            "config": {
                "steps": ["make"],
                "tool": "odoo@18.0",
                "secrets": ["A"],
                "limits": {"cpus": 2, "memory": "1g", "network": "none"},
            },
        }
    )
    assert claim.commit == "a" * 40 and claim.workflow_path == "p/build/w"
    assert claim.config.limits.network is False and claim.config.limits.cpus == 2.0
    with pytest.raises(AttributeError):
        claim.commit = "x"  # type: ignore[misc]


def test_secret_sources(tmp_path: Path) -> None:
    good = tmp_path / "s.env"
    good.write_text("# comment\n\nA=1=2\nB_2= spaced \n")
    assert dict(from_file(good).values) == {"A": "1=2", "B_2": " spaced "}
    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nnot a line\n")
    with pytest.raises(SecretsError, match=r"bad.env:2: expected NAME=value"):
        from_file(bad)
    with pytest.raises(SecretsError, match="cannot read the secrets file"):
        from_file(tmp_path / "absent.env")
    environ = {"OPS_SECRET_A": "x", "OPS_SECRET_lower": "y", "PATH": "/bin"}
    assert dict(from_environment("OPS_SECRET_", environ).values) == {"A": "x"}
    assert "OPS_SECRET_A" not in environ  # no child of the worker inherits it


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"steps": "echo not a list"}, "config.steps"),
        ({"steps": [1, 2]}, "config.steps"),
        ({"steps": ["echo \x00"]}, "config.steps"),
        ({"steps": ["true"], "timeout_s": "abc"}, "config.timeout_s"),
        ({"steps": ["true"], "timeout_s": 0}, "config.timeout_s"),
        ({"steps": ["true"], "artifacts": {"a": 1}}, "config.artifacts"),
        ({"steps": ["true"], "secrets": "TOKEN"}, "config.secrets"),
        ({"steps": ["true"], "tool": ["odoo"]}, "config.tool"),
        (["echo", "a list"], "config is not a mapping"),
    ],
)
def test_a_config_a_member_broke_fails_its_run_and_the_worker_carries_on(
    tmp_path: Path, config: object, problem: str
) -> None:
    queue = InMemoryQueue()
    broken = queue.add(config)
    fine = queue.add({"steps": ["echo fine"]}, metadata=["not", "a", "mapping"])
    worker(queue, tmp_path).run()
    assert broken.status == "failed" and problem in str(broken.error)
    assert fine.status == "succeeded"
