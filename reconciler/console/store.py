"""The console's database access: every request is one transaction as the `authenticated` role
with the member's claims set, exactly as PostgREST does on Supabase, so row-level security
decides what each person sees and the action functions decide what each may do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from reconciler.console.identity import Member
from reconciler.db.queries import query

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
STATEMENT_TIMEOUT = "15s"  # no page holds a connection longer than this


class UnknownUser(Exception):
    """The token is valid but its subject is not a user (never was, or was deleted since)."""


class Store:
    def __init__(self, conninfo: str, max_size: int = 8) -> None:
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"application_name": "ops-reconciler-console"},
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def as_member(self, member: Member) -> AsyncIterator[Session]:
        """One transaction as the member: committed when the block ends, rolled back on error.
        `set_config('role', ...)` is SET LOCAL ROLE, in the same round trip as the claims and the
        check that the token's subject is still a user (UnknownUser when not: a valid signature
        on a deleted or made-up user opens nothing)."""
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "select ops.console_user_exists(%s),"
                " set_config('role', 'authenticated', true),"
                " set_config('request.jwt.claims', %s, true),"
                " set_config('request.jwt.claim.sub', %s, true),"
                " set_config('statement_timeout', %s, true)",
                (member.user_id, json.dumps(member.claims), str(member.user_id), STATEMENT_TIMEOUT),
            )
            row = await cursor.fetchone()
            if not row or not row[0]:
                raise UnknownUser(str(member.user_id))
            yield Session(conn)


class Session:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def all(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = await self.conn.execute(query(name), params or {})
        return await cursor.fetchall()

    async def one(self, name: str, params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        cursor = await self.conn.execute(query(name), params or {})
        return await cursor.fetchone()
