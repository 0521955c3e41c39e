"""Reading a long conversation under RLS costs what the page costs, in every plan.

Statements that run many times get a generic plan, made without knowing the
conversation. These tests force that plan, run the history queries as the user (RLS
on) in a database of long conversations (where the planner once preferred a bitmap scan
of the whole conversation and a sort), and check that the scan reads about one page."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from avatar_chat.conversations.repository import HISTORY_AFTER, HISTORY_BEFORE
from avatar_chat.ops.migrate import migrate
from tests.support.databases import claims_of, fresh_database
from tests.support.factories import User, create_user

SMALL_USERS = 400  # each with one conversation of 4 messages...
LONG = 3000  # ...and one user whose conversation is long: the skew a generic plan ignores
PAGE = 20


@dataclass
class LongConversation:
    dsn: str
    user: User
    conversation_id: uuid.UUID


@pytest.fixture(scope="module")
async def long_conversation(database_url: str) -> AsyncIterator[LongConversation]:
    async with fresh_database(database_url) as dsn:
        await migrate(dsn)
        owner = await asyncpg.connect(dsn)
        try:
            await owner.execute(
                """
                with u as (
                  insert into auth.users (id, email)
                  select gen_random_uuid(), 'small-' || i || '@example.test' from generate_series(1, $1) i
                  returning id
                ), c as (
                  insert into public.conversations (user_id) select id from u returning id, user_id
                )
                insert into public.messages (conversation_id, user_id, role, content)
                select c.id, c.user_id, 'user', 'hello' from c, generate_series(1, 4)
                """,
                SMALL_USERS,
            )
            user = await create_user(owner)
            conversation_id = await owner.fetchval(
                "insert into public.conversations (user_id) values ($1) returning id", user.id
            )
            await owner.execute(
                "insert into public.messages (conversation_id, user_id, role, content)"
                " select $1, $2, 'user', 'message ' || i from generate_series(1, $3) i",
                conversation_id,
                user.id,
                LONG,
            )
            await owner.execute("analyze public.messages")
        finally:
            await owner.close()
        yield LongConversation(dsn, user, conversation_id)


def _scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if "Scan" in plan["Node Type"] else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


@pytest.mark.parametrize(("sql", "bound"), [(HISTORY_AFTER, 1000), (HISTORY_BEFORE, 2500)])
async def test_a_history_page_reads_one_page_in_a_generic_plan(
    long_conversation: LongConversation, sql: str, bound: int
) -> None:
    conn = await asyncpg.connect(long_conversation.dsn)
    try:
        async with conn.transaction():
            await conn.execute("select avatar_chat.act_as($1)", json.dumps(claims_of(long_conversation.user)))
            await conn.execute("set local plan_cache_mode = force_generic_plan")
            # HISTORY_AFTER's $4 is the upper bound (`before`, else past any seq).
            upper = ", bigint" if "$4" in sql else ""
            await conn.execute(f"prepare page(uuid, bigint, integer{upper}) as {sql}")
            try:
                explained = await conn.fetchval(
                    "explain (analyze, format json)"
                    f" execute page('{long_conversation.conversation_id}', {bound}, {PAGE}"
                    f"{', 9007199254740993' if upper else ''})"
                )
            finally:
                await conn.execute("deallocate page")
    finally:
        await conn.close()
    plan = json.loads(explained)[0]["Plan"]
    scans = [s for s in _scans(plan) if s.get("Relation Name") == "messages"]
    assert scans, plan
    assert all(s["Node Type"] in ("Index Scan", "Index Only Scan") for s in scans), scans
    assert sum(s["Actual Rows"] for s in scans) <= PAGE, scans
