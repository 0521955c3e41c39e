"""Acting as a role in SQL (as PostgREST does), and databases of a test's own."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.factories import User


@asynccontextmanager
async def as_role(
    conn: asyncpg.Connection, role: str, claims: dict[str, str] | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """What PostgREST does per request; rolled back at the end whatever happened."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            json.dumps(claims or {"role": role}),
        )
        yield conn
    finally:
        await tx.rollback()


USER_TABLES = (
    "public.avatars",
    "public.avatar_history",
    "public.conversations",
    "public.messages",
    "public.conversation_summaries",
    "public.user_safety",
    "public.user_plans",
    "public.usage_records",
    "avatar_chat.usage_counters",
    "avatar_chat.exports",
    "avatar_chat.interactions",
    "avatar_chat.safety_events",
)


async def user_rows(owner: asyncpg.Connection, user: User) -> dict[str, int]:
    """How many rows the user has in each of USER_TABLES, and in auth.users (0 or 1)."""
    counts = {
        t: await owner.fetchval(f"select count(*) from {t} where user_id = $1", user.id) for t in USER_TABLES
    }
    counts["auth.users"] = await owner.fetchval("select count(*) from auth.users where id = $1", user.id)
    return counts


def claims_of(user: User) -> dict[str, str]:
    return {"sub": str(user.id), "role": "authenticated", "aud": "authenticated"}


def with_database(dsn: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """An empty database on the test server, dropped afterwards (also on failure)."""
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'create database "{name}"')
        try:
            yield with_database(dsn, name)
        finally:
            await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()
