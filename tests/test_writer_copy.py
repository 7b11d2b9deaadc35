"""The COPY text the writer makes is read back by PostgreSQL as the values it was made of, on
its fast path (a line with nothing to escape) and on its careful one; the ids it makes for new
projects and users are random version 4 UUIDs that PostgreSQL takes (reconciler/db/writer.py)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from reconciler.db.writer import copy_text, new_ids

COLUMNS = "a text, b jsonb, c text[], d boolean, e text, f integer"
ROWS: list[tuple[Any, ...]] = [
    ("plain", {"steps": ["./build.sh"], "timeout_s": 1800}, [], True, None, 1),
    ("tab\there", {"k": "line\nbreak"}, ["x"], False, "back\\slash", 2),
    ("\\N", {"quote": 'say "hi"', "tab": "\t"}, ['a"b', "c\\d", "e,f", "{g}"], None, "\r", 3),
    ("ünïcödé ✓", {"nested": {"list": [1, 2.5, None, True]}, "ü": "é"}, ["ü"], True, "", 4),
    ("big", {"n": 2**70, "neg": -(2**63) - 1}, [], False, "N", 5),
    (None, {}, ["NULL"], None, "\\", 6),
]


def _load(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    conn.execute(f"create temporary table t ({COLUMNS})")
    with conn.cursor() as cursor, cursor.copy("copy t from stdin") as copy:
        copy.write(copy_text(rows))
    found = conn.execute("select a, b, c, d, e, f from t order by f").fetchall()
    conn.execute("drop table t")
    return found


def test_copy_text_is_read_back_as_the_values(conn: psycopg.Connection[Any]) -> None:
    assert _load(conn, ROWS) == ROWS


def test_each_row_alone_is_read_back_too(conn: psycopg.Connection[Any]) -> None:
    """A refused batch is replayed row by row: each row's text stands on its own."""
    for row in ROWS:
        assert _load(conn, [row]) == [row]


def test_plain_rows_are_written_as_they_are(conn: psycopg.Connection[Any]) -> None:
    ids = new_ids(2)
    conn.execute("create temporary table m (p uuid, u uuid, role text)")
    with conn.cursor() as cursor, cursor.copy("copy m from stdin") as copy:
        copy.write(copy_text([(ids[0], ids[1], "owner")], plain=True))
    assert conn.execute("select p::text, u::text, role from m").fetchall() == [
        (ids[0], ids[1], "owner")
    ]


def test_new_ids_are_distinct_random_uuids_postgresql_takes(
    conn: psycopg.Connection[Any],
) -> None:
    ids = new_ids(5000)
    assert len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    taken = conn.execute("select array_agg(x::uuid::text) from unnest(%s::text[]) x", [ids])
    assert taken.fetchone() == (ids,)
    assert new_ids(0) == []
