"""A chat turn survives the catalog cache invalidations Postgres sends at any time.

A PL/pgSQL variable of a named row type is looked up again by its name once the type's
cache entry was invalidated (any invalidation of its table: an ANALYZE, which autovacuum
runs on its own, a cache reset), and as the current user. begin_turn once kept the user's
interaction in a variable of type avatar_chat.interactions and assigned it while acting as
`authenticated`, which has no USAGE on the private schema: a first message whose turn met
an ANALYZE of that table (the stream_burst benchmark's thousand first messages make
autovacuum analyze it) was refused with 403 forbidden (42501, permission denied for schema
avatar_chat).

Real Postgres, the real app in-process; the interleaving is made, not waited for: the
conversation's row is held by another session while the turn waits for it, the table is
analyzed meanwhile, then the row is let go.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from avatar_chat.core.settings import Settings
from tests.support.apps import own_app
from tests.support.factories import create_chat, create_user, send

DISCLOSURE = "You are chatting with an AI, not a person. [test]"


async def _wait_for_turn_blocked(owner: asyncpg.Connection, timeout_s: float = 15.0) -> None:
    """Until a begin_turn call waits for a lock (the conversation's row, held by the test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        waiting = await owner.fetchval(
            "select count(*) from pg_stat_activity"
            " where wait_event_type = 'Lock' and query like '%avatar_chat.begin_turn(%'"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the turn never waited for the conversation's lock")


async def test_a_first_message_is_not_refused_when_interactions_is_analyzed_during_its_turn(
    settings: Settings, owner: asyncpg.Connection, database_url: str
) -> None:
    async with own_app(settings, safety_disclosure_notice=DISCLOSURE) as (client, _):
        user = await create_user(owner)
        chat = await create_chat(client, user)

        holder = await asyncpg.connect(database_url)
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("select from public.conversations where id = $1 for update", uuid.UUID(chat))
            # The turn reads the user's interaction (none: a first message), acts as the
            # user, then waits here for the conversation's row.
            sending = asyncio.create_task(send(client, user, chat, "Hello there"))
            await _wait_for_turn_blocked(owner)
            # A row more since the last ANALYZE, so this one changes the table's statistics
            # and invalidates its cached row type in every session, as autovacuum's would.
            someone = await create_user(owner)
            await owner.execute(
                "insert into avatar_chat.interactions (user_id, started_at, last_at)"
                " values ($1, now(), now())",
                someone.id,
            )
            await owner.execute("analyze avatar_chat.interactions")
            await lock.commit()
            answer = await asyncio.wait_for(sending, 30)
        finally:
            await holder.close()

    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert [n["notice_kind"] for n in body["notices"]] == ["disclosure"]
    recorded = await owner.fetchval(
        "select count(*) from avatar_chat.interactions where user_id = $1", user.id
    )
    assert recorded == 1
