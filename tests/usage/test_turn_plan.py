"""The user's plan is read once per chat turn: begin_turn reads it and hands it to the
messages_enforce_limits trigger of the rows it writes (the user's message, the reply) in
the transaction-local setting avatar_chat.turn_plan, keyed by user, token plan and
transaction. Every other writer (the Data API here) has the trigger read it itself, and an
edited plan holds from the next turn on."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx

from tests.support.assertions import assert_error
from tests.support.databases import claims_of
from tests.support.factories import User, create_chat, send
from tests.usage.conftest import MakePlan, assign

BEGIN_TURN = (
    "select outcome, plan_name from avatar_chat.begin_turn("
    "$1, $2, $3, null, 30, null, null, null, null, null, 20, null, null)"
)


async def _function_calls(conn: asyncpg.Connection, name: str) -> int:
    """Calls of avatar_chat.<name> so far in this transaction (track_functions)."""
    calls: int = await conn.fetchval(
        "select coalesce(sum(calls), 0)::int from pg_stat_xact_user_functions"
        " where schemaname = 'avatar_chat' and funcname = $1",
        name,
    )
    return calls


async def test_a_turn_reads_the_plan_once(
    app_client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    owner: asyncpg.Connection,
    user: User,
    make_plan: MakePlan,
) -> None:
    """One plan_of call for a turn that writes the user's message and the reply (the
    trigger ran for both and counted the send once); the setting is cleared before
    begin_turn returns."""
    plan = await make_plan(messages_per_day=5)
    await assign(owner, user, plan)
    chat = await create_chat(app_client, user)
    async with conn.transaction():
        await conn.execute("set local track_functions = 'pl'")
        row = await conn.fetchrow(BEGIN_TURN, json.dumps(claims_of(user)), uuid.UUID(chat), "hello")
        assert row is not None
        assert (row["outcome"], row["plan_name"]) == ("new", plan)
        assert await _function_calls(conn, "messages_enforce_limits") == 2
        assert await _function_calls(conn, "plan_of") == 1
        assert await conn.fetchval("select current_setting('avatar_chat.turn_plan', true)") == ""
    counted = await owner.fetchval(
        "select day_messages from avatar_chat.usage_counters where user_id = $1", user.id
    )
    assert counted == 1


async def test_a_plan_edit_between_two_turns_holds_at_once(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """The plan handed over is this turn's read: never kept for the next one."""
    plan = await make_plan(messages_per_day=1)
    await assign(owner, user, plan)
    chat = await create_chat(app_client, user)
    assert (await send(app_client, user, chat, "one")).status_code == 201
    assert_error(await send(app_client, user, chat, "two"), 429, "quota_exceeded")
    await owner.execute("update public.plans set messages_per_day = 2 where name = $1", plan)
    assert (await send(app_client, user, chat, "two")).status_code == 201
    await assign(owner, user, await make_plan(messages_per_day=2))  # another plan: 2 sent today
    assert_error(await send(app_client, user, chat, "three"), 429, "quota_exceeded")


async def _data_api_insert(
    conn: asyncpg.Connection, user: User, chat: str, turn_plan: dict[str, Any] | None, claims: dict[str, Any]
) -> str | None:
    """A user message written as the Data API writes it (as `authenticated`, with these
    claims), with avatar_chat.turn_plan set to `turn_plan` first (its `xact` "this" stands
    for this transaction's id): the error's hint, None when admitted. Rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        if turn_plan is not None:
            if turn_plan.get("xact") == "this":
                turn_plan = turn_plan | {"xact": await conn.fetchval("select pg_current_xact_id()::text")}
            await conn.execute("select set_config('avatar_chat.turn_plan', $1, true)", json.dumps(turn_plan))
        await conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
            json.dumps(claims),
        )
        try:
            await conn.execute(
                "insert into public.messages (conversation_id, role, content) values ($1, 'user', 'hi')",
                uuid.UUID(chat),
            )
        except asyncpg.PostgresError as e:
            if e.sqlstate != "AC429":
                raise
            return str(e.hint)
        return None
    finally:
        await tx.rollback()


async def test_other_writers_read_the_plan_and_a_setting_for_another_turn_never_applies(
    app_client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    owner: asyncpg.Connection,
    user: User,
    other_user: User,
    make_plan: MakePlan,
) -> None:
    """A Data API insert gets its plan from plan_of (a plan allowing nothing refuses it; the
    edited plan admits it at once). A turn_plan setting is used only when it names this
    user, this token's plan and this transaction: a generous plan in a setting for anyone
    or anything else changes nothing."""
    none_allowed = await make_plan(messages_per_day=0)
    await assign(owner, user, none_allowed)
    chat = await create_chat(app_client, user)
    claims = claims_of(user)
    assert await _data_api_insert(conn, user, chat, None, claims) == "quota_exceeded"

    generous = {"messages_per_day": 100, "name": "generous"}
    turn = {"user": str(user.id), "token_plan": None, "xact": "this", "time_zone": "UTC", "plan": generous}
    for stale in (
        turn | {"xact": "1"},  # another transaction's
        turn | {"user": str(other_user.id)},  # another user's
        turn | {"token_plan": "gold"},  # read under another token plan
    ):
        assert await _data_api_insert(conn, user, chat, stale, claims) == "quota_exceeded", stale
    # Another token plan the other way round: the claims name one the setting was not read for.
    with_plan = claims | {"app_metadata": {"plan": none_allowed}}
    assert await _data_api_insert(conn, user, chat, turn, with_plan) == "quota_exceeded"
    # This user's, this transaction's, this token plan's: it is what the trigger goes by.
    assert await _data_api_insert(conn, user, chat, turn, claims) is None
    no_plan = turn | {"plan": None}  # no plan at all: no quota
    assert await _data_api_insert(conn, user, chat, no_plan, claims) is None

    await owner.execute("update public.plans set messages_per_day = 1 where name = $1", none_allowed)
    assert await _data_api_insert(conn, user, chat, None, claims) is None
