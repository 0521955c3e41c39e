"""Following a reply costs the database per reply, not per follower.

Two real servers on one database: A generates a slow reply, B (one worker) is followed by
1, then 100 clients of the same user. The database's committed transactions per second
stay where one follower put them (B reads the reply once per poll for all of them), and
every follower gets the whole reply, exactly once.
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

from tests.support.assertions import assert_error
from tests.support.factories import User, create_chat
from tests.support.servers import ServerProcess, server_pair
from tests.support.sse import sse_events

pytestmark = pytest.mark.slow

SLOW = {
    "OFFLINE_LLM_CHUNK_DELAY_MS": "600",  # about 13 chunks: a reply of about 8 s
    "CHAT_STREAM_POLL_MS": "50",  # each reader: up to 20 statements a second
    "MAX_OPEN_STREAMS_PER_USER": "0",  # this test opens 100 streams as one user
}
LONG = "tell me everything about the sea, the ships, the storms and the lighthouses, slowly"


@pytest.fixture(scope="module")
async def servers(database_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with server_pair(database_url, SLOW) as pair:
        yield pair


async def _commits_per_second(owner: asyncpg.Connection, seconds: float) -> float:
    async def commits() -> int:
        await asyncio.sleep(1.0)  # backends report their counters about once a second
        await owner.execute("select pg_stat_clear_snapshot()")
        value: int = await owner.fetchval(
            "select xact_commit from pg_stat_database where datname = current_database()"
        )
        return value

    before, started = await commits(), time.monotonic()
    await asyncio.sleep(seconds)
    after = await commits()
    return (after - before) / (time.monotonic() - started)


async def _follow(client: httpx.AsyncClient, url: str, user: User) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async with client.stream("GET", url, headers={**user.headers, "Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        async for event in sse_events(response):
            events.append(event)
    return events


async def test_a_hundred_followers_cost_the_database_what_one_does(
    servers: tuple[ServerProcess, ServerProcess], owner: asyncpg.Connection, user: User
) -> None:
    a, b = servers
    async with a.client() as ca, b.client() as cb1, b.client() as cb2:
        conversation_id = await create_chat(ca, user)
        headers = {**user.headers, "Accept": "text/event-stream"}
        sent: list[tuple[str, Any]] = []
        announced = asyncio.Event()

        async def send() -> None:
            async with ca.stream(
                "POST", f"/conversations/{conversation_id}/messages", json={"content": LONG}, headers=headers
            ) as response:
                async for event in sse_events(response):
                    sent.append(event)
                    if event[0] == "assistant_message":
                        announced.set()

        sending = asyncio.create_task(send())
        await announced.wait()
        url = f"/conversations/{conversation_id}/messages/{sent[1][1]['id']}/stream"

        first = [asyncio.create_task(_follow(cb1, url, user))]
        await asyncio.sleep(0.3)
        one = await _commits_per_second(owner, 1.5)
        more = [asyncio.create_task(_follow(cb1 if i % 2 else cb2, url, user)) for i in range(99)]
        await asyncio.sleep(0.5)
        assert not sending.done(), "the reply ended before all followers were measured"
        hundred = await _commits_per_second(owner, 1.5)
        # One follower's reader alone is up to 20 a second; a hundred readers would be 2,000.
        assert hundred < one * 1.5 + 10, (one, hundred)

        followed = await asyncio.gather(*first, *more)
        await sending
        done = sent[-1]
        assert done[0] == "done"
        for events in followed:
            assert events[-1] == done
            assert "".join(data["content"] for name, data in events if name == "delta") == done[1]["content"]


async def test_open_streams_per_user_are_capped(database_url: str, user: User, other_user: User) -> None:
    env = {**SLOW, "MAX_OPEN_STREAMS_PER_USER": "2"}
    async with ServerProcess(database_url=database_url, env=env) as server, server.client() as client:
        conversation_id = await create_chat(client, user)
        headers = {**user.headers, "Accept": "text/event-stream"}
        url = f"/conversations/{conversation_id}/messages"
        async with client.stream("POST", url, json={"content": LONG}, headers=headers) as sending:
            assert sending.status_code == 201
            events = sse_events(sending)
            reply_id = [data async for data in _until(events, "assistant_message")][-1]["id"]
            async with client.stream("GET", f"{url}/{reply_id}/stream", headers=headers) as following:
                assert following.status_code == 200
                # Two open: a third stream of this user is refused before it starts anything.
                refused = await client.get(f"{url}/{reply_id}/stream", headers=headers)
                assert_error(refused, 429, "too_many_streams")
                assert refused.headers["Retry-After"] == "2"
                sent = await client.post(
                    url, json={"content": "and more"}, headers={**headers, "Idempotency-Key": "k"}
                )
                assert_error(sent, 429, "too_many_streams")
                # Another user, and JSON answers, are not counted.
                await create_chat(client, other_user)
            # One closed: room for one again, once the server has seen that client go (at
            # its stream's next event at the latest).
            deadline = time.monotonic() + 5
            while (again := await client.get(f"{url}/{reply_id}/stream", headers=headers)).status_code == 429:
                assert time.monotonic() < deadline, "the closed stream was never released"
                await asyncio.sleep(0.2)
            assert again.status_code == 200
    # Nothing was started for the refused send.
    assert len(await _messages(database_url, conversation_id)) == 2


async def _until(events: AsyncIterator[tuple[str, Any]], name: str) -> AsyncIterator[Any]:
    async for event, data in events:
        yield data
        if event == name:
            return


async def _messages(database_url: str, conversation_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "select seq from public.messages where conversation_id = $1", uuid.UUID(conversation_id)
        )
    finally:
        await conn.close()
