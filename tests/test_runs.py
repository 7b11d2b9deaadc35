"""The seed's lifecycle and concurrency tests, run numbering, and the RPC functions' contracts."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from tests.helpers import make_project, make_run, make_workflow, scalar, status_of


def claim(url: str, worker: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        return scalar(conn, "select ops.claim_next_run(%s)", (worker,))  # type: ignore[no-any-return]


def test_seed_concurrency_three_workers_five_runs(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    for _ in range(5):
        make_run(conn, project, workflow)

    barrier = threading.Barrier(3)

    def worker(name: str) -> dict[str, Any]:
        with psycopg.connect(db_url) as session:
            barrier.wait()
            result: dict[str, Any] = scalar(session, "select ops.claim_next_run(%s)", (name,))
            session.commit()
            return result

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(worker, ["worker-001", "worker-002", "worker-003"]))

    claimed = {r["run_id"] for r in results}
    assert len(claimed) == 3 and None not in claimed
    rows = conn.execute(
        "select status, claimed_by from ops.runs where project_id = %s order by run_number",
        (project,),
    ).fetchall()
    assert sorted(s for s, _ in rows) == ["claimed"] * 3 + ["queued"] * 2
    assert sorted(w for s, w in rows if s == "claimed") == [
        "worker-001",
        "worker-002",
        "worker-003",
    ]


def test_eight_workers_claim_a_hundred_runs_each_exactly_once(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    conn.execute(
        "insert into ops.runs (project_id, workflow_id) select %s, %s from generate_series(1, 100)",
        (project, workflow),
    )
    claims: dict[str, list[str]] = {}
    barrier = threading.Barrier(8)

    def worker(name: str) -> None:
        mine = claims.setdefault(name, [])
        with psycopg.connect(db_url, autocommit=True) as session:
            barrier.wait()
            while run_id := scalar(session, "select ops.claim_next_run(%s)", (name,))["run_id"]:
                mine.append(run_id)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, [f"w{i}" for i in range(8)]))

    everything = [run for runs in claims.values() for run in runs]
    assert len(everything) == 100 and len(set(everything)) == 100
    assert scalar(conn, "select count(*) from ops.runs where status = 'queued'") == 0
    # one claim event per run, naming the worker that got it
    events = dict(
        conn.execute(
            "select run_id::text, payload->>'worker_id' from ops.run_events "
            "where payload->>'new_status' = 'claimed'"
        ).fetchall()
    )
    assert events == {run: name for name, runs in claims.items() for run in runs}


def test_seed_full_lifecycle(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn, "test-project")
    run_id = make_run(conn, project, make_workflow(conn, project, "Test Build"))

    claimed = scalar(conn, "select ops.claim_next_run('test-worker')")
    assert claimed["run_id"] == str(run_id) and claimed["run_number"] == 1
    assert scalar(conn, "select ops.start_workflow_run(%s, 'test-worker')", (run_id,))["success"]
    for line in ["Starting build process", "Installing dependencies"]:
        assert scalar(conn, "select ops.append_run_log(%s, 'info', %s)", (run_id, line))["success"]
    artifact = scalar(
        conn,
        "select ops.add_run_artifact(%s, 'builds/test-project/artifact.tar.gz', "
        "'https://storage.example/artifact.tar.gz', 'application/gzip', 1048576, "
        "'sha256:abc123', now() + interval '30 days')",
        (run_id,),
    )
    assert artifact["success"]
    done = scalar(conn, "select ops.complete_workflow_run(%s, 0)", (run_id,))
    assert done["status"] == "succeeded" and done["exit_code"] == 0

    final = conn.execute(
        "select status, started_at is not null, finished_at is not null, exit_code "
        "from ops.runs where id = %s",
        (run_id,),
    ).fetchone()
    assert final == ("succeeded", True, True, 0)
    events = conn.execute(
        "select event_type, message from ops.run_events where run_id = %s order by created_at",
        (run_id,),
    ).fetchall()
    assert events == [
        ("state_change", "Run claimed by worker"),
        ("state_change", "Run started execution"),
        ("info", "Artifact added: builds/test-project/artifact.tar.gz"),
        ("state_change", "Run completed with status: succeeded"),
    ]
    logs = conn.execute(
        "select log_level, message from ops.run_logs where run_id = %s order by timestamp",
        (run_id,),
    ).fetchall()
    assert logs == [("info", "Starting build process"), ("info", "Installing dependencies")]
    artifacts = conn.execute(
        "select artifact_key, content_type, size_bytes, checksum from ops.run_artifacts "
        "where run_id = %s",
        (run_id,),
    ).fetchall()
    assert artifacts == [
        ("builds/test-project/artifact.tar.gz", "application/gzip", 1048576, "sha256:abc123")
    ]


def test_nonzero_exit_code_fails_the_run_with_its_message(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn)
    run_id = make_run(conn, project, make_workflow(conn, project))
    scalar(conn, "select ops.claim_next_run('w')")
    scalar(conn, "select ops.start_workflow_run(%s, 'w')", (run_id,))
    result = scalar(conn, "select ops.complete_workflow_run(%s, 3, 'tests failed')", (run_id,))
    assert result["status"] == "failed"
    assert conn.execute(
        "select status, exit_code, error_message from ops.runs where id = %s", (run_id,)
    ).fetchone() == ("failed", 3, "tests failed")


def test_rpc_refusals(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn)
    run_id = make_run(conn, project, make_workflow(conn, project))
    assert scalar(conn, "select ops.claim_next_run('w1')")["run_id"] == str(run_id)
    assert scalar(conn, "select ops.claim_next_run('w2')")["run_id"] is None
    # another worker cannot start it; completing before start is refused
    assert not scalar(conn, "select ops.start_workflow_run(%s, 'w2')", (run_id,))["success"]
    assert not scalar(conn, "select ops.complete_workflow_run(%s, 0)", (run_id,))["success"]
    assert status_of(conn, run_id) == "claimed"
    bad_level = scalar(conn, "select ops.append_run_log(%s, 'fatal', 'x')", (run_id,))
    assert bad_level == {"success": False, "error": "Invalid log level"}
    assert scalar(conn, "select count(*) from ops.run_logs") == 0


def test_artifact_upsert_keeps_one_row_per_key(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn)
    run_id = make_run(conn, project, make_workflow(conn, project))
    for size in (1, 2):
        scalar(
            conn, "select ops.add_run_artifact(%s, 'a.tgz', 'file:///a', null, %s)", (run_id, size)
        )
    assert conn.execute(
        "select artifact_key, size_bytes from ops.run_artifacts where run_id = %s", (run_id,)
    ).fetchall() == [("a.tgz", 2)]


def test_list_queued_runs(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    runs = [make_run(conn, project, workflow) for _ in range(3)]
    scalar(conn, "select ops.claim_next_run('w')")
    conn.execute("update ops.runs set status = 'canceled' where id = %s", (runs[2],))
    listed = conn.execute("select run_id, status from ops.list_queued_runs()").fetchall()
    assert listed == [(runs[0], "claimed"), (runs[1], "queued")]


def test_logs_are_searchable_by_full_text(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn)
    run_id = make_run(conn, project, make_workflow(conn, project))
    for line in ["Installing dependencies", "Database migrated", "Tests passed"]:
        scalar(conn, "select ops.append_run_log(%s, 'info', %s)", (run_id, line))
    found = conn.execute(
        "select message from ops.run_logs "
        "where to_tsvector('english', message) @@ plainto_tsquery('english', 'migrate')"
    ).fetchall()
    assert found == [("Database migrated",)]


# --- defect 7: run numbers per project, without gaps -------------------------------------


def numbers(conn: psycopg.Connection[Any], project: uuid.UUID) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "select run_number from ops.runs where project_id = %s order by run_number", (project,)
        )
    ]


def test_run_numbers_count_per_project(conn: psycopg.Connection[Any]) -> None:
    a, b = make_project(conn, "project-a"), make_project(conn, "project-b")
    wa, wb = make_workflow(conn, a), make_workflow(conn, b)
    for project, workflow in [(a, wa), (b, wb), (a, wa), (b, wb), (a, wa)]:
        make_run(conn, project, workflow)
    assert numbers(conn, a) == [1, 2, 3]
    assert numbers(conn, b) == [1, 2]


def test_run_numbers_have_no_gaps_under_concurrent_inserts_and_rollbacks(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    barrier = threading.Barrier(8)

    outcomes: list[str] = []

    def insert(index: int) -> None:
        with psycopg.connect(db_url) as session:
            barrier.wait()
            for round_ in range(10):
                try:
                    make_run(session, project, workflow, key=f"k{round_}-{index % 4}")
                except psycopg.errors.UniqueViolation:
                    session.rollback()  # a duplicate key without ON CONFLICT: refused
                    outcomes.append("duplicate")
                    continue
                if round_ % 3 == 0:
                    session.rollback()
                    outcomes.append("rolled back")
                else:
                    session.commit()
                    outcomes.append("committed")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(insert, range(8)))

    assert {"duplicate", "rolled back", "committed"} <= set(outcomes)
    got = numbers(conn, project)
    assert got == list(range(1, len(got) + 1))
    assert scalar(
        conn, "select last_run_number from ops.projects where id = %s", (project,)
    ) == len(got)


def test_on_conflict_do_nothing_does_not_burn_a_number(conn: psycopg.Connection[Any]) -> None:
    project = make_project(conn)
    workflow = make_workflow(conn, project)
    enqueue = (
        "insert into ops.runs (project_id, workflow_id, idempotency_key) values (%s, %s, %s) "
        "on conflict (workflow_id, idempotency_key) do nothing"  # keys are per workflow (0011)
    )
    for key in ["sha-1", "sha-1", "sha-2", "sha-1", "sha-3"]:
        conn.execute(enqueue, (project, workflow, key))
    assert numbers(conn, project) == [1, 2, 3]


# --- defects 3 and 9 ----------------------------------------------------------------------


def test_artifact_cleanup_query_is_served_by_an_index(conn: psycopg.Connection[Any]) -> None:
    conn.execute("set enable_seqscan = off")
    plan = "\n".join(
        r[0]
        for r in conn.execute("explain select id from ops.run_artifacts where expires_at < now()")
    )
    assert "idx_ops_run_artifacts_expires" in plan


def test_upgrade_advisories_have_a_unique_natural_key(conn: psycopg.Connection[Any]) -> None:
    insert = (
        "insert into ops.upgrade_advisories "
        "(advisory_key, from_version, to_version, severity, title, description) "
        "values ('odoo-17-18-account', '17.0', '18.0', 'high', 't', 'd')"
    )
    conn.execute(insert)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert)
