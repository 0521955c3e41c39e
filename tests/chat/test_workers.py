"""G1-G3 with real processes: `avatar-chat serve --workers 3` on the test database, once
connected directly and once through a transaction-mode pooler (pgbouncer, as Supabase's
Supavisor on port 6543), where consecutive transactions of one client connection run on
different server connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.factories import User, away_from_minute_boundary, create_chat, create_user, history, send
from tests.support.servers import ServerProcess
from tests.support.sse import sse_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def server(database_url: str, connect_to: dict[str, str]) -> AsyncIterator[ServerProcess]:
    # 50 sends to one conversation queue for its row lock, each holding a connection: on 2
    # cores shared with the other PostgreSQL majors' runs the last ones wait longer than
    # the production default (2 s) and would get 503s, which are not what is tested here.
    env = {"DB_ACQUIRE_TIMEOUT_S": "15", **connect_to}
    async with ServerProcess(database_url=database_url, workers=3, env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
async def slow_server(database_url: str, connect_to: dict[str, str]) -> AsyncIterator[ServerProcess]:
    """One worker whose offline replies take about two seconds to stream, with a reply
    lease (1 s) shorter than that: only its renewals keep a reply from being taken over."""
    env = {"OFFLINE_LLM_CHUNK_DELAY_MS": "250", "CHAT_REPLY_LEASE_S": "1", **connect_to}
    async with ServerProcess(database_url=database_url, env=env) as proc:
        yield proc


async def test_persona_patch_then_30_sends_all_use_the_new_persona(server: ServerProcess, user: User) -> None:
    async with server.client() as client:
        conversation = await create_chat(client, user)
        for i in range(15):  # warm every worker's SessionStore with version 1
            assert (await send(client, user, conversation, f"warm {i}")).status_code == 201
        patched = await client.patch(
            "/avatars/me/persona", json={"personality": "witty"}, headers=user.headers
        )
        assert patched.status_code == 200
        version = patched.json()["version"]
        replies = []
        for i in range(30):
            response = await send(client, user, conversation, f"after {i}")
            assert response.status_code == 201, response.text
            replies.append(response.json()["assistant_message"])
    stale = [r for r in replies if (r["persona_version"], r["personality"]) != (version, "witty")]
    assert stale == []


async def test_100_dashboard_updates_each_followed_at_once_by_a_send(
    server: ServerProcess, owner: asyncpg.Connection, user: User
) -> None:
    personalities = ["friendly", "professional", "playful", "caring", "witty"]
    stale: list[tuple[int, Any, Any]] = []
    async with server.client() as client:
        conversation = await create_chat(client, user)
        for i in range(100):
            personality = personalities[i % len(personalities)]
            version = await owner.fetchval(
                "update public.avatars set personality = $2 where user_id = $1 returning version",
                user.id,
                personality,
            )
            response = await send(client, user, conversation, f"turn {i}")
            assert response.status_code == 201, response.text
            reply = response.json()["assistant_message"]
            if (reply["persona_version"], reply["personality"]) != (version, personality):
                stale.append((i, reply["persona_version"], reply["personality"]))
    assert stale == []


async def test_50_concurrent_sends_to_one_conversation(server: ServerProcess, user: User) -> None:
    async with server.client() as client:
        conversation = await create_chat(client, user)
        responses = await asyncio.gather(*(send(client, user, conversation, f"c{i}") for i in range(50)))
        assert [r.status_code for r in responses if r.status_code != 201] == []
        messages = await history(client, user, conversation)
    assert len(messages) == 100
    assert [m["seq"] for m in messages] == list(range(1, 101))
    assert sorted(m["content"] for m in messages if m["role"] == "user") == sorted(f"c{i}" for i in range(50))
    assert all(m["status"] == "complete" for m in messages)
    # Every reply directly follows the message it answers.
    by_seq = {m["seq"]: m for m in messages}
    for seq in range(1, 101, 2):
        assert (by_seq[seq]["role"], by_seq[seq + 1]["role"]) == ("user", "assistant")


async def test_idempotency_across_workers(server: ServerProcess, user: User) -> None:
    async with server.client() as client:
        conversation = await create_chat(client, user)
        first = await send(client, user, conversation, "once", key="k-seq")
        second = await send(client, user, conversation, "once", key="k-seq")
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()

        async def until_done() -> dict[str, Any]:
            for _ in range(100):
                response = await send(client, user, conversation, "burst", key="k-burst")
                if response.status_code == 201:
                    data: dict[str, Any] = response.json()
                    return data
                assert response.status_code == 409, response.text
                await asyncio.sleep(0.05)
            raise AssertionError("never completed")

        results = await asyncio.gather(*(until_done() for _ in range(10)))
        assert all(r == results[0] for r in results)
        messages = await history(client, user, conversation)
    assert [m["content"] for m in messages if m["role"] == "user"] == ["once", "burst"]
    assert len(messages) == 4


async def test_retry_while_generating_is_409_with_retry_after(slow_server: ServerProcess, user: User) -> None:
    async with slow_server.client() as client:
        conversation = await create_chat(client, user)
        original = asyncio.create_task(send(client, user, conversation, "slow one", key="k-slow"))
        for wait in (0.3, 1.5):  # before and after the first lease (1 s) would have run out
            await asyncio.sleep(wait)
            repeat = await send(client, user, conversation, "slow one", key="k-slow")
            assert repeat.status_code == 409, repeat.text
            assert repeat.json()["error"]["code"] == "send_in_progress"
            assert int(repeat.headers["Retry-After"]) >= 1
        done = await original
        assert done.status_code == 201
        replay = await send(client, user, conversation, "slow one", key="k-slow")
        assert replay.json() == done.json()


async def read_sse(response: httpx.Response, stop_after_deltas: int | None = None) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async for event in sse_events(response):
        events.append(event)
        deltas = sum(1 for n, _ in events if n == "delta")
        if stop_after_deltas is not None and deltas >= stop_after_deltas:
            break
    return events


async def test_sse_over_real_http_and_disconnect_mid_stream(slow_server: ServerProcess, user: User) -> None:
    async with slow_server.client() as client:
        conversation = await create_chat(client, user, name="Iris")
        url = f"/conversations/{conversation}/messages"
        headers = {**user.headers, "Accept": "text/event-stream"}

        async with client.stream("POST", url, json={"content": "full stream"}, headers=headers) as response:
            assert response.status_code == 201
            events = await read_sse(response)
        names = [n for n, _ in events]
        assert names[:2] == ["user_message", "assistant_message"] and names[-1] == "done"
        assert set(names[2:-1]) == {"delta"}
        assert events[-1][1]["content"] == "".join(d["content"] for n, d in events if n == "delta")

        # Go away after two chunks: the reply is still generated and saved, complete.
        async with client.stream("POST", url, json={"content": "leaving early"}, headers=headers) as response:
            partial = await read_sse(response, stop_after_deltas=2)
        assert [n for n, _ in partial][:4] == ["user_message", "assistant_message", "delta", "delta"]
        reply_seq = partial[0][1]["seq"] + 1
        for _ in range(100):
            messages = await history(client, user, conversation)
            reply = next((m for m in messages if m["seq"] == reply_seq), None)
            if reply and reply["status"] != "streaming":
                break
            await asyncio.sleep(0.1)
        assert reply is not None
        assert reply["status"] == "complete"
        assert "leaving early" in reply["content"] and "Iris" in reply["content"]


async def test_other_users_cannot_reach_each_other_through_workers(
    server: ServerProcess, owner: asyncpg.Connection
) -> None:
    alice, mallory = await create_user(owner), await create_user(owner)
    async with server.client() as client:
        conversation = await create_chat(client, alice)
        await send(client, alice, conversation, "secret")
        for _ in range(6):
            response = await client.get(f"/conversations/{conversation}/messages", headers=mallory.headers)
            assert response.status_code == 404


async def test_send_limit_holds_across_workers(
    server: ServerProcess, owner: asyncpg.Connection, user: User
) -> None:
    async with server.client() as client:
        conversation = await create_chat(client, user)
        # Operators may change the limits live (SQL or dashboard); every worker obeys at once.
        await away_from_minute_boundary()
        await owner.execute("select avatar_chat.configure_limits(5, 0)")
        try:
            responses = await asyncio.gather(*(send(client, user, conversation, f"x{i}") for i in range(9)))
        finally:
            await owner.execute("select avatar_chat.configure_limits(0, 0)")
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] * 5 + [429] * 4
        assert all(r.headers["Retry-After"] for r in responses if r.status_code == 429)
        assert len(await history(client, user, conversation)) == 10
