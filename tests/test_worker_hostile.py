"""A step's output and files are hostile (issue 8): bytes PostgreSQL text cannot hold, invalid
UTF-8, artifact patterns and symlinks that point out of the workspace. The worker keeps every
byte readably, never writes outside its store, fails the run with one clear reason and carries
on. Real worker, real shells, real server."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.worker.output import decode_line
from tests.test_worker import drain, enqueue, outcome

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]


def stored(conn: Conn, run_id: Any) -> list[tuple[bytes, dict[str, Any]]]:
    """The step's lines as the bytes it printed (escaped lines decoded), with their metadata."""
    rows = conn.execute(
        "select message, metadata from ops.run_logs where run_id = %s "
        "and metadata->>'stream' in ('stdout', 'stderr') order by timestamp, id",
        (run_id,),
    ).fetchall()
    return [(decode_line(m, md.get("encoding") == "escaped"), md) for m, md in rows]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (r"printf 'a\000b\n'", [b"a\x00b"]),
        (r"printf '\000\000\000'", [b"\x00\x00\x00"]),
        (r"printf 'bad \377\376 utf8\n'", [b"bad \xff\xfe utf8"]),
        (r"printf 'half \342\202'", [b"half \xe2\x82"]),
        (r"printf 'not an escape: \\x00 \\\\ \n'", [b"not an escape: \\x00 \\\\ "]),
        (r"printf 'tab\there\r\n'", [b"tab\there\r"]),
        (r"printf 'caf\303\251 \360\237\232\200\n'", ["café 🚀".encode()]),
        (r"printf 'one\000\ntwo\377\n\n'", [b"one\x00", b"two\xff", b""]),
    ],
    ids=["nul", "only-nul", "invalid", "truncated", "backslashes", "controls", "utf8", "mixed"],
)
def test_every_byte_a_step_prints_is_kept_and_the_worker_carries_on(
    conn: Conn, db_url: str, tmp_path: Path, command: str, expected: list[bytes]
) -> None:
    hostile = enqueue(conn, {"steps": [command]}, "hostile")
    after = enqueue(conn, {"steps": ["echo still alive"]}, "after")
    drain(db_url, tmp_path)
    assert outcome(conn, hostile) == ("succeeded", 0, None)
    assert [raw for raw, _ in stored(conn, hostile)] == expected
    assert outcome(conn, after) == ("succeeded", 0, None)


def test_a_clean_line_is_stored_as_printed_and_only_odd_lines_are_escaped(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    run = enqueue(conn, {"steps": [r"echo 'C:\path'; printf 'x\000\n'"]})
    drain(db_url, tmp_path)
    lines = conn.execute(
        "select message, metadata->>'encoding' from ops.run_logs where run_id = %s "
        "and metadata->>'stream' = 'stdout' order by timestamp, id",
        (run,),
    ).fetchall()
    assert lines == [("C:\\path", None), ("x\\x00", "escaped")]


def test_stdout_and_stderr_are_told_apart(conn: Conn, db_url: str, tmp_path: Path) -> None:
    run = enqueue(conn, {"steps": ["echo out; echo err >&2"]})
    drain(db_url, tmp_path)
    streams = {raw: md["stream"] for raw, md in stored(conn, run)}
    assert streams == {b"out": "stdout", b"err": "stderr"}


def test_a_line_without_end_is_stored_in_pieces(conn: Conn, db_url: str, tmp_path: Path) -> None:
    run = enqueue(conn, {"steps": ["head -c 300000 /dev/zero | tr '\\0' x"]})
    drain(db_url, tmp_path)
    pieces = stored(conn, run)
    assert b"".join(raw for raw, _ in pieces) == b"x" * 300_000
    assert [md.get("continued", False) for _, md in pieces][-1] is False
    assert all(md.get("continued") for _, md in pieces[:-1]) and len(pieces) > 1


HOST_FILE_PATTERNS = [
    ("/etc/hostname", "is absolute; patterns are relative to the run's workspace"),
    ("../../etc/hostname", "leaves the run's workspace (`..`)"),
    ("../" * 40 + "etc/hostname", "leaves the run's workspace (`..`)"),
    ("dist/../../x", "leaves the run's workspace (`..`)"),
    ("~/x", "is absolute"),
]


@pytest.mark.parametrize(("pattern", "reason"), HOST_FILE_PATTERNS)
def test_an_artifact_pattern_out_of_the_workspace_fails_the_run_clearly(
    conn: Conn, db_url: str, tmp_path: Path, pattern: str, reason: str
) -> None:
    before = Path("/etc/hostname").read_bytes()
    bad = enqueue(conn, {"steps": ["touch x"], "artifacts": [pattern]}, "bad")
    good = enqueue(conn, {"steps": ["echo fine"]}, "good")
    drain(db_url, tmp_path)
    status, code, message = outcome(conn, bad)
    assert (status, code) == ("failed", 1)
    assert message == f"artifact pattern {pattern!r} {reason}" or reason in str(message)
    assert Path("/etc/hostname").read_bytes() == before
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*"))
    assert outcome(conn, good) == ("succeeded", 0, None)


@pytest.mark.parametrize(
    ("steps", "pattern"),
    [
        (["ln -s /etc/shadow leak.txt"], "*.txt"),
        (["ln -s /etc etc && true"], "etc/hostname"),
        (["mkdir d && ln -s ../../../../../../etc/passwd d/p.txt"], "d/*.txt"),
        (["ln -s / root"], "root/etc/hostname"),
    ],
    ids=["symlink-to-shadow", "symlinked-folder", "relative-symlink", "symlink-to-root"],
)
def test_an_artifact_through_a_symlink_out_of_the_workspace_is_refused(
    conn: Conn, db_url: str, tmp_path: Path, steps: list[str], pattern: str
) -> None:
    run = enqueue(conn, {"steps": steps, "artifacts": [pattern]})
    drain(db_url, tmp_path)
    status, _, message = outcome(conn, run)
    assert status == "failed"
    assert "resolves outside the run's workspace" in str(message)
    assert not (tmp_path / "artifacts").exists() or not any(
        p.is_file() for p in (tmp_path / "artifacts").rglob("*")
    )


def test_a_fifo_or_a_folder_is_no_artifact_and_never_hangs_the_worker(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    run = enqueue(conn, {"steps": ["mkfifo out.txt && mkdir d.txt"], "artifacts": ["*.txt"]})
    drain(db_url, tmp_path)
    assert outcome(conn, run) == ("failed", 1, "artifact pattern '*.txt' matched no file")


def test_a_symlink_inside_the_workspace_is_stored_as_its_target(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    run = enqueue(
        conn,
        {
            "steps": [
                "mkdir -p build dist && printf abc > build/a.bin && ln -s ../build/a.bin dist/a"
            ],
            "artifacts": ["dist/a"],
        },
    )
    drain(db_url, tmp_path)
    assert outcome(conn, run) == ("succeeded", 0, None)
    checksum = conn.execute(
        "select checksum from ops.run_artifacts where run_id = %s", (run,)
    ).fetchone()
    assert checksum == ("sha256:" + hashlib.sha256(b"abc").hexdigest(),)
    # stored under the resolved path inside the workspace, inside the store
    assert (tmp_path / "artifacts" / "acme-erp" / "1" / "build" / "a.bin").read_bytes() == b"abc"
