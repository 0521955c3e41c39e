"""The database goes away in the middle of chat load, and comes back.

While it is down: requests fail fast with 503 + Retry-After, /ready is 503, nothing
hangs. When it is back: the API recovers by itself (the worker's heartbeat row too),
nothing acknowledged is lost or duplicated, and G1 holds.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.state import AppState
from tests.reliability.conftest import Faulty
from tests.support.factories import TEST_JWT_SECRET, User, create_avatar, create_conversation, history
from tests.support.sse import parse_sse

pytestmark = pytest.mark.slow


@pytest.fixture
async def outage_app(faulty: Faulty, settings: Settings) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(
        update={
            "database_url": SecretStr(faulty.dsn),
            "supabase_jwt_secret": SecretStr(TEST_JWT_SECRET),
            "db_acquire_timeout_s": 1.0,
            "db_connect_timeout_s": 1.0,
            "db_statement_timeout_ms": 2000,
            "chat_turn_deadline_s": 5.0,
            "chat_reply_lease_s": 2.0,
        }
    )
    app = create_app(configured)
    async with LifespanManager(app) as manager:
        app.state.asgi = manager.app
        yield app


async def make_user(faulty: Faulty) -> User:
    from avatar_chat.auth.tokens import mint_access_token

    conn = await faulty.connect()
    try:
        user_id = uuid.uuid4()
        await conn.execute(
            "insert into auth.users (id, email) values ($1, $2)", user_id, f"{user_id.hex}@x.test"
        )
    finally:
        await conn.close()
    return User(
        user_id, f"{user_id.hex}@x.test", mint_access_token(TEST_JWT_SECRET, user_id=user_id, email=None)
    )


async def test_database_restart_mid_load(faulty: Faulty, outage_app: FastAPI) -> None:
    state: AppState = outage_app.state.resources
    transport = httpx.ASGITransport(app=outage_app.state.asgi)
    client = httpx.AsyncClient(transport=transport, base_url="http://test", timeout=20)
    user = await make_user(faulty)
    await create_avatar(client, user)
    conversations = [(await create_conversation(client, user))["id"] for _ in range(3)]
    ledger: dict[str, dict[str, Any]] = {}
    statuses: list[int] = []
    slowest = 0.0
    stop_sending = asyncio.Event()

    async def sender(worker: int) -> None:
        nonlocal slowest
        i = 0
        while not stop_sending.is_set():
            key = f"w{worker}-{i}"
            conversation = conversations[i % len(conversations)]
            while True:  # a well-behaved client: retry the same key until acknowledged
                started = time.monotonic()
                response = await client.post(
                    f"/conversations/{conversation}/messages",
                    json={"content": key},
                    headers={**user.headers, "Idempotency-Key": key},
                )
                slowest = max(slowest, time.monotonic() - started)
                statuses.append(response.status_code)
                if response.status_code == 201:
                    ledger[key] = {"conversation": conversation, **response.json()}
                    break
                assert response.status_code in (503, 409, 502, 504), response.text
                if response.status_code == 503:
                    assert response.headers["Retry-After"]
                await asyncio.sleep(0.1)
            i += 1

    senders = [asyncio.create_task(sender(w)) for w in range(4)]
    await asyncio.sleep(1.0)
    acknowledged_before = len(ledger)

    await faulty.stop()
    started = time.monotonic()
    ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.headers["Retry-After"]
    assert ready.json()["error"]["code"] == "database_unavailable"
    probe = await client.get("/avatars/me", headers=user.headers)
    assert probe.status_code == 503
    assert probe.json()["error"]["code"] == "database_unavailable"
    assert time.monotonic() - started < 3, "requests must fail fast while the database is down"
    await asyncio.sleep(1.5)

    await faulty.start()
    deadline = time.monotonic() + 20
    while (await client.get("/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the API did not recover by itself"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    stop_sending.set()
    await asyncio.wait_for(asyncio.gather(*senders), 30)

    assert 503 in statuses
    assert slowest < 5, f"a request hung for {slowest:.1f}s"
    assert len(ledger) > acknowledged_before
    deadline = time.monotonic() + 10
    while state.heartbeat.live_id() is None:  # renewed within a third of its TTL
        assert time.monotonic() < deadline, "the worker heartbeat did not resume"
        await asyncio.sleep(0.1)

    # Every acknowledged message is there exactly once; seq has no gaps.
    for conversation in conversations:
        messages = await history(client, user, conversation)
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
        user_contents = [m["content"] for m in messages if m["role"] == "user"]
        assert len(user_contents) == len(set(user_contents))
        acked = {k for k, v in ledger.items() if v["conversation"] == conversation}
        assert acked <= set(user_contents)

    # G1 right after the outage: an edit made with no API call is used by the next turn.
    conn = await faulty.connect()
    try:
        version = await conn.fetchval(
            "update public.avatars set personality = 'witty' where user_id = $1 returning version", user.id
        )
    finally:
        await conn.close()
    reply = await client.post(
        f"/conversations/{conversations[0]}/messages", json={"content": "after"}, headers=user.headers
    )
    assert reply.status_code == 201
    assert (
        reply.json()["assistant_message"]["persona_version"],
        reply.json()["assistant_message"]["personality"],
    ) == (
        version,
        "witty",
    )
    await client.aclose()


async def test_a_worker_started_while_the_database_is_down_serves_once_it_is_back(
    faulty: Faulty, settings: Settings
) -> None:
    configured = settings.model_copy(
        update={
            "database_url": SecretStr(faulty.dsn),
            "db_acquire_timeout_s": 1.0,
            "db_connect_timeout_s": 1.0,
        }
    )
    await faulty.stop()
    try:
        app = create_app(configured)
        async with LifespanManager(app, startup_timeout=30) as manager:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test")
            ready = await client.get("/ready")
            assert ready.status_code == 503
            assert ready.headers["Retry-After"]
            await faulty.start()
            deadline = time.monotonic() + 20
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            user = await make_user(faulty)
            assert (
                await client.post("/avatars/me", json={"name": "Late"}, headers=user.headers)
            ).status_code == 201
            await client.aclose()
    finally:
        if not await _is_up(faulty):
            await faulty.start()


async def _is_up(faulty: Faulty) -> bool:
    try:
        conn = await faulty.connect()
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def _wait_for_lock_wait(owner: asyncpg.Connection, query_fragment: str) -> None:
    """Until a statement of the API containing `query_fragment` waits on a lock."""
    deadline = time.monotonic() + 10
    while not await owner.fetchval(
        "select exists (select from pg_stat_activity where application_name = 'avatar-chat'"
        " and wait_event_type = 'Lock' and position($1 in query) > 0)",
        query_fragment,
    ):
        assert time.monotonic() < deadline, f"no API statement waits on a lock: {query_fragment}"
        await asyncio.sleep(0.02)


async def test_a_reply_whose_save_finds_the_pool_busy_waits_and_ends_complete(
    settings: Settings,
    database_url: str,
    owner: asyncpg.Connection,
    user: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The pool's only connection is taken right after begin_turn, for longer than
    DB_ACQUIRE_TIMEOUT_S, so the reply cannot be saved at once. The database is up, only
    busy: the reply is saved as soon as a connection is free, and the client is told it is
    complete (never a 503 for a reply that was saved, nor a 502 provider failure)."""
    app = create_app(
        settings.model_copy(
            update={"db_pool_min_size": 1, "db_pool_max_size": 1, "db_acquire_timeout_s": 1.0}
        )
    )
    blocker_conversation = await asyncpg.connect(database_url)
    blocker_avatar = await asyncpg.connect(database_url)
    try:
        async with LifespanManager(app) as manager:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t")
            await create_avatar(client, user)
            conversation = await create_conversation(client, user)
            # begin_turn waits on the conversation's row lock, holding the pool's only
            # connection; a PATCH of the avatar waits on the avatar's row lock, holding it next.
            await blocker_conversation.execute("begin")
            await blocker_conversation.execute(
                "select from public.conversations where id = $1 for update", uuid.UUID(conversation["id"])
            )
            await blocker_avatar.execute("begin")
            await blocker_avatar.execute("select from public.avatars where user_id = $1 for update", user.id)
            headers = {**user.headers, "Idempotency-Key": "busy-1"}
            url = f"/conversations/{conversation['id']}/messages"
            sending = asyncio.create_task(client.post(url, json={"content": "hello"}, headers=headers))
            await _wait_for_lock_wait(owner, "begin_turn")
            patching = asyncio.create_task(
                client.patch("/avatars/me", json={"backstory": "changed"}, headers=user.headers)
            )
            await asyncio.sleep(0.3)  # the PATCH now queues for the connection begin_turn holds
            caplog.clear()
            await blocker_conversation.execute("commit")
            await _wait_for_lock_wait(owner, "update_my_avatar")

            await asyncio.sleep(2.5)  # the final save has waited past DB_ACQUIRE_TIMEOUT_S twice
            assert not sending.done(), "the client was answered before its reply was saved"
            await blocker_avatar.execute("commit")  # a connection is free again
            assert (await patching).status_code == 200
            sent = await sending
            assert sent.status_code == 201, sent.text
            exchange = sent.json()
            assert exchange["assistant_message"]["status"] == "complete"
            messages = await history(client, user, conversation["id"])
            assert [(m["role"], m["status"]) for m in messages] == [
                ("user", "complete"),
                ("assistant", "complete"),
            ]
            assert messages[-1]["content"] == exchange["assistant_message"]["content"]
            assert not any("database unavailable" in r.getMessage() for r in caplog.records)

            retried = await client.post(url, json={"content": "hello"}, headers=headers)
            assert retried.status_code == 201, retried.text
            assert retried.headers["Idempotent-Replayed"] == "true"
            assert retried.json() == exchange
            await client.aclose()
    finally:
        await blocker_conversation.close()
        await blocker_avatar.close()


async def test_following_a_reply_through_an_outage_ends_with_an_error_event(
    faulty: Faulty, settings: Settings
) -> None:
    """A follower's poll that cannot reach the database waits DB_ACQUIRE_TIMEOUT_S, then the
    stream ends with an `error` event the client can act on (resume), never cut mid-stream."""
    configured = settings.model_copy(
        update={
            "database_url": SecretStr(faulty.dsn),
            "supabase_jwt_secret": SecretStr(TEST_JWT_SECRET),
            "db_acquire_timeout_s": 1.0,
            "db_connect_timeout_s": 1.0,
            "offline_llm_chunk_delay_ms": 300,
            "chat_turn_deadline_s": 20.0,
        }
    )
    # Two workers: A generates, B follows (a follower on A would read A's memory).
    async with (
        LifespanManager(create_app(configured)) as a,
        LifespanManager(create_app(configured)) as b,
    ):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=a.app), base_url="http://t", timeout=30)
        other = httpx.AsyncClient(transport=httpx.ASGITransport(app=b.app), base_url="http://t", timeout=30)
        user = await make_user(faulty)
        await create_avatar(client, user)
        conversation = (await create_conversation(client, user))["id"]
        url = f"/conversations/{conversation}/messages"
        sending = asyncio.create_task(client.post(url, json={"content": "a long one"}, headers=user.headers))
        await asyncio.sleep(0.3)  # the reply has begun (its first chunks take 300 ms each)
        messages = await history(client, user, conversation)
        assert [m["status"] for m in messages] == ["complete", "streaming"]
        reply_id = messages[1]["id"]
        following = asyncio.create_task(
            other.get(f"{url}/{reply_id}/stream", headers={**user.headers, "Accept": "text/event-stream"})
        )
        await asyncio.sleep(0.5)
        await faulty.stop()
        await asyncio.sleep(2.5)  # longer than the follower waits
        await faulty.start()
        followed = await following
        assert followed.status_code == 200
        events = parse_sse(followed.text)
        assert events[-1][0] == "error", events
        assert events[-1][1]["code"] == "database_unavailable"
        await sending
        await client.aclose()
        await other.aclose()
