"""The per-worker LISTEN connection: evicts on NOTIFY, flushes and reconnects when cut."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from avatar_chat.state import AppState
from tests.factories import User, create_avatar, create_conversation, send


async def eventually(check: object, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check() if callable(check) else check
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_dashboard_update_evicts_the_cached_avatar(
    app_client: httpx.AsyncClient, app_state: AppState, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    await send(app_client, user, conversation["id"], "cache me")
    assert await app_state.store.peek_avatar(user.id) is not None
    await owner.execute("update public.avatars set backstory = 'edited' where user_id = $1", user.id)

    async def evicted() -> bool:
        return await app_state.store.peek_avatar(user.id) is None

    await eventually(evicted)


async def test_listener_reconnects_and_flushes_when_its_connection_is_killed(
    app_client: httpx.AsyncClient, app_state: AppState, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    await send(app_client, user, conversation["id"], "cache me")
    listener = app_state.listener
    reconnects, flushes = listener.reconnects, app_state.store.stats.flushes
    killed = await owner.fetchval(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity"
        " where application_name = 'avatar-chat-listener'"
    )
    assert killed >= 1
    await eventually(lambda: listener.reconnects > reconnects and listener.connected)
    assert app_state.store.stats.flushes >= flushes + 1
    assert await app_state.store.peek_avatar(user.id) is None
    assert (await app_client.get("/ready")).status_code == 200

    # And it listens again: a dashboard edit after the reconnect still evicts.
    await send(app_client, user, conversation["id"], "cache me again")
    await owner.execute("update public.avatars set backstory = 'edited again' where user_id = $1", user.id)

    async def evicted() -> bool:
        return await app_state.store.peek_avatar(user.id) is None

    await eventually(evicted)
