"""A reply's text is saved while it grows only for whoever needs it before it ends.

Two real servers on one database: A generates slowly (the offline provider pausing between
chunks), B is another worker. A reply nobody follows is written once, when it ends (its
lease renewed meanwhile by A's one statement for all its replies); a client following it
on B makes A save it as it grows from then on, and sees its text within about a second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from avatar_chat.core.settings import Settings
from tests.support.apps import own_app
from tests.support.factories import User, create_chat, history, send
from tests.support.servers import ServerProcess, server_pair
from tests.support.sse import sse_records

pytestmark = pytest.mark.slow

SLOW = {
    "OFFLINE_LLM_CHUNK_DELAY_MS": "400",  # about 13 chunks: a reply takes five seconds or so
    "CHAT_PARTIAL_SAVE_MS": "100",
    "CHAT_STREAM_POLL_MS": "50",
    "CHAT_REPLY_LEASE_S": "1",  # renewed many times over one reply
    # CHAT_DEMAND_POLL_MS: the default (500)
}
LONG = "tell me everything about the sea, the ships, the storms and the lighthouses, slowly"

Event = tuple[str, Any, str | None]


@pytest.fixture(scope="module")
async def servers(database_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with server_pair(database_url, SLOW) as pair:
        yield pair


async def _reply_row(owner: asyncpg.Connection, reply_id: str) -> asyncpg.Record:
    row = await owner.fetchrow(
        "select status::text as status, content, followed_at, lease_expires_at > now() as leased"
        " from public.messages where id = $1",
        uuid.UUID(reply_id),
    )
    assert row is not None
    return row


@dataclass
class Sending:
    """A streamed send on server A, read to its end in the background."""

    conversation_id: str
    reply_id: str
    events: list[Event]
    task: asyncio.Task[None]


async def _start_send(client: httpx.AsyncClient, user: User) -> Sending:
    """A new chat, and a send with SSE whose reply has begun to stream."""
    conversation_id = await create_chat(client, user)
    events: list[Event] = []
    started = asyncio.Event()

    async def read() -> None:
        headers = {**user.headers, "Accept": "text/event-stream"}
        async with client.stream(
            "POST", f"/conversations/{conversation_id}/messages", json={"content": LONG}, headers=headers
        ) as response:
            assert response.status_code == 201
            async for event in sse_records(response):
                events.append(event)
                if event[0] == "delta":
                    started.set()

    task = asyncio.create_task(read())
    await started.wait()
    return Sending(conversation_id, events[1][1]["id"], events, task)


def _text(events: list[Event]) -> str:
    return "".join(data["content"] for name, data, _ in events if name == "delta")


async def test_a_reply_nobody_follows_is_written_once_when_it_ends(
    servers: tuple[ServerProcess, ServerProcess], owner: asyncpg.Connection, user: User
) -> None:
    a, b = servers
    async with a.client() as ca, b.client() as cb:
        started = await _start_send(ca, user)
        conversation_id, reply_id, events, sending = (
            started.conversation_id,
            started.reply_id,
            started.events,
            started.task,
        )
        await asyncio.sleep(2.5)  # well past the 1 s lease: renewed, though no text is written
        assert not sending.done(), "the reply ended too soon to show anything"
        row = await _reply_row(owner, reply_id)
        assert (row["status"], row["content"], row["followed_at"], row["leased"]) == (
            "streaming",
            "",
            None,
            True,
        )
        assert len(_text(events)) > 20  # the client has read plenty meanwhile
        # Another worker lists it as being generated, not as cut off.
        listed = {m["id"]: m for m in await history(cb, user, conversation_id)}
        assert listed[reply_id]["status"] == "streaming"
        await sending
        assert events[-1][0] == "done"
        row = await _reply_row(owner, reply_id)
        assert (row["status"], row["content"]) == ("complete", events[-1][1]["content"])
        assert _text(events) == row["content"]


async def test_a_follower_on_another_worker_gets_the_text_within_a_second(
    servers: tuple[ServerProcess, ServerProcess], owner: asyncpg.Connection, user: User
) -> None:
    a, b = servers
    async with a.client() as ca, b.client() as cb:
        started = await _start_send(ca, user)
        conversation_id, reply_id, events, sending = (
            started.conversation_id,
            started.reply_id,
            started.events,
            started.task,
        )
        await asyncio.sleep(0.5)
        assert (await _reply_row(owner, reply_id))["content"] == ""  # nobody followed yet

        asked = time.monotonic()
        followed: list[tuple[float, Event]] = []
        headers = {**user.headers, "Accept": "text/event-stream"}
        url = f"/conversations/{conversation_id}/messages/{reply_id}/stream"
        async with cb.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            async for event in sse_records(response):
                followed.append((time.monotonic() - asked, event))
        await sending

        first_text = next(at for at, (name, data, _) in followed if name == "delta" and data["content"])
        done_at, (last, done, _) = followed[-1]
        assert last == "done" and done["status"] == "complete"
        assert first_text < 1.2, f"the follower waited {first_text:.2f} s for text"
        assert done_at - first_text > 0.5, "the text came only with the end: it was not saved as it grew"
        # More than one save while it grew: the follower got the text in several steps.
        assert sum(1 for _, (name, _, _) in followed if name == "delta") >= 3
        # Not one character duplicated or missing.
        assert _text([event for _, event in followed]) == done["content"] == _text(events)


async def test_a_reply_done_before_anyone_follows_is_never_saved_partially(
    settings: Settings, user: User
) -> None:
    async with own_app(
        settings, offline_llm_chunk_delay_ms=40, chat_partial_save_ms=100, chat_partial_save_chars=10
    ) as (client, state):
        conversation = await create_chat(client, user)
        for _ in range(3):
            reply = (await send(client, user, conversation, LONG)).json()["assistant_message"]
            assert reply["status"] == "complete" and len(reply["content"]) > 10
        # Slow replies, far more than CHAT_PARTIAL_SAVE_CHARS each, but nobody asked for them.
        assert state.chat.stats.partial_saves == 0
        assert state.chat.generating.polls >= 1  # the worker did ask
