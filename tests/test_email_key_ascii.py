"""Migration 0022: ops.email_key takes a short path for e-mails of ASCII only, and gives every
e-mail the key it gave before (that of reconciler/core/emails.py), so its index stays valid."""

from __future__ import annotations

import random
from typing import Any

import psycopg

from reconciler.core.emails import UPPER, email_key

Conn = psycopg.Connection[Any]


def keys(conn: Conn, emails: list[str]) -> list[str]:
    rows = conn.execute("select ops.email_key(e) from unnest(%s::text[]) e", (emails,))
    return [key for (key,) in rows]


def test_every_ascii_character_and_every_mapped_letter_keeps_its_key(conn: Conn) -> None:
    ascii_only = ["".join(map(chr, range(1, 128))), "Alice.Smith+Ops@Example.COM", "", "@"]
    each_letter = [f"{letter}x@Y.z" for letter in UPPER]  # one non-ASCII letter: the long path
    emails = ascii_only + each_letter + [f"A{letter}" for letter in UPPER[:40]]
    assert keys(conn, emails) == [email_key(e) for e in emails]


def test_mixed_random_emails_keep_their_keys(conn: Conn) -> None:
    chance = random.Random(22)
    alphabet = "ABCxyz.@+-_09" + UPPER[26:80] + "ßσςİ"
    emails = ["".join(chance.choices(alphabet, k=chance.randint(1, 30))) for _ in range(2000)]
    assert keys(conn, emails) == [email_key(e) for e in emails]


def test_the_index_is_still_used_for_a_key(conn: Conn) -> None:
    plan = conn.execute(
        "explain select id from auth.users where ops.email_key(email) = ops.email_key(%s)",
        ("Someone@Example.com",),
    ).fetchall()
    assert "users_email_key_folded" in " ".join(line for (line,) in plan)
