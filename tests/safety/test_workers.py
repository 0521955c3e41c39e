"""Moderation of a reply across two real servers on one database: server A generates a
reply the model turns flagged halfway; a client that follows it on server B (resuming
from its Last-Event-ID) hears it stop and be replaced, and history on any worker shows only
the replacement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.factories import User, create_chat, history
from tests.support.servers import ServerProcess, server_pair
from tests.support.sse import sse_records

pytestmark = pytest.mark.slow

FILTERED = "[withheld: test]"
CLEAN = "Once upon a time there was a lighthouse keeper who loved the sea and its storms. " * 2
FLAGGED = "Now let's have sex. "
REST = "THE END OF A REPLY THAT SHOULD NEVER BE SHOWN. " * 3

Event = tuple[str, Any, str | None]


@pytest.fixture(scope="module")
async def fake_llm() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(default_scenario="slow", slow_delay_s=0.03) as server:
        yield server


@pytest.fixture(scope="module")
async def servers(
    database_url: str, fake_llm: FakeOpenAIServer
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    env = {
        "LLM_BASE_URL": fake_llm.base_url,
        "LLM_API_KEY": "test-key",
        "MODERATION_OUTPUT_CHECK_CHARS": "40",
        "MODERATION_FILTERED_TEXT": FILTERED,
        "CHAT_PARTIAL_SAVE_MS": "50",
        "CHAT_STREAM_POLL_MS": "30",
    }
    async with server_pair(database_url, env) as pair:
        yield pair


async def test_a_reply_flagged_mid_stream_is_filtered_for_a_follower_on_another_worker(
    servers: tuple[ServerProcess, ServerProcess],
    fake_llm: FakeOpenAIServer,
    owner: asyncpg.Connection,
    user: User,
) -> None:
    fake_llm.reset()
    fake_llm.default_scenario = "slow"
    fake_llm.reply = CLEAN + FLAGGED + REST
    a, b = servers
    async with a.client() as ca, b.client() as cb:
        chat = await create_chat(ca, user)
        headers = {**user.headers, "Accept": "text/event-stream", "Idempotency-Key": "mid-1"}
        first: list[Event] = []
        async with ca.stream(
            "POST", f"/conversations/{chat}/messages", json={"content": "a story"}, headers=headers
        ) as r:
            assert r.status_code == 201
            async for event in sse_records(r):
                first.append(event)
                if sum(1 for e in first if e[0] == "delta") == 3:
                    break  # the client goes away; A goes on generating
        reply_id = next(data["id"] for name, data, _ in first if name == "assistant_message")
        last_id = [event_id for name, _, event_id in first if name == "delta"][-1]

        follow = {**user.headers, "Accept": "text/event-stream", "Last-Event-ID": str(last_id)}
        rest: list[Event] = []
        async with cb.stream("GET", f"/conversations/{chat}/messages/{reply_id}/stream", headers=follow) as r:
            assert r.status_code == 200
            async for event in sse_records(r):
                rest.append(event)
        assert rest[-1][0] == "filtered", [name for name, _, _ in rest]
        saved = rest[-1][1]
        assert (saved["id"], saved["status"], saved["content"]) == (reply_id, "filtered", FILTERED)
        shown = "".join(data["content"] for name, data, _ in first + rest if name == "delta")
        # It stopped at the check that caught it: text goes out as it comes (MODERATION_OUTPUT_MODE
        # stream), so at most MODERATION_OUTPUT_CHECK_CHARS of it was unchecked when shown.
        assert shown == fake_llm.reply[: len(shown)]
        assert len(shown) < len(CLEAN + FLAGGED) + 40 + len("SHOULD ")
        for client in (ca, cb):
            messages = await history(client, user, chat)
            assert (messages[-1]["status"], messages[-1]["content"]) == ("filtered", FILTERED)
        # Following it again, from the start: the replacement at once.
        again: list[Event] = []
        async with ca.stream("GET", f"/conversations/{chat}/messages/{reply_id}/stream", headers=follow) as r:
            async for event in sse_records(r):
                again.append(event)
        assert [name for name, _, _ in again] == ["filtered"]
    stored = await owner.fetchval("select content from public.messages where id = $1::uuid", reply_id)
    assert stored == FILTERED
    events = await owner.fetch(
        "select direction, action, categories from avatar_chat.safety_events where user_id = $1", user.id
    )
    assert [(e["direction"], e["action"], list(e["categories"])) for e in events] == [
        ("out", "filter", ["sexual"])
    ]
