"""Conversation memory: a summary of what came before the window, made after commit (G4)
and used only while it matches the rows it covers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import asyncpg
import pytest

from avatar_chat.chat.prompt import build_request
from avatar_chat.chat.window import WindowMessage
from avatar_chat.core.settings import Settings
from avatar_chat.llm.base import PromptMessage, SummaryRequest
from avatar_chat.llm.offline import offline_summary
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.apps import app_with_provider
from tests.support.databases import as_role, claims_of
from tests.support.factories import User, avatar_snapshot, create_avatar, create_conversation, history, send
from tests.support.servers import ServerProcess

WINDOW = 4  # messages: a summary once more than 6 came after the last one


async def _summary(owner: asyncpg.Connection, conversation_id: str, *, after: float = 10) -> asyncpg.Record:
    deadline = time.monotonic() + after
    while True:
        row = await owner.fetchrow(
            "select covers_upto_seq, revision, content from public.conversation_summaries"
            " where conversation_id = $1",
            uuid.UUID(conversation_id),
        )
        if row is not None:
            return row
        assert time.monotonic() < deadline, "no summary was made"
        await asyncio.sleep(0.05)


def _prompt(fake: FakeOpenAIServer) -> list[dict[str, Any]]:
    """The messages of the last streamed reply request (not a summary request)."""
    request = next(r for r in reversed(fake.requests) if r.get("stream") is True)
    messages: list[dict[str, Any]] = request["messages"]
    return messages


async def test_a_summary_is_used_only_while_it_matches_its_rows(
    settings: Settings, fake_llm: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    fake_llm.reset()
    async for client in app_with_provider(settings, fake_llm.base_url, chat_window_messages=WINDOW):
        await create_avatar(client, user)
        conversation = (await create_conversation(client, user))["id"]
        for i in range(4):  # 8 messages: more than a window and a half
            assert (await send(client, user, conversation, f"fact number {i}")).status_code == 201
        summary = await _summary(owner, conversation)
        assert summary["covers_upto_seq"] == 8 - WINDOW // 2
        revision = await owner.fetchval(
            "select revision from public.conversations where id = $1", uuid.UUID(conversation)
        )
        assert summary["revision"] == revision

        await send(client, user, conversation, "what do you remember?")
        prompt = _prompt(fake_llm)
        assert prompt[1]["role"] == "system" and summary["content"] in prompt[1]["content"]
        said = [m["content"] for m in prompt if m["role"] == "user"]
        # Only what came after the summary, and the new message; "fact number 0" is in the summary.
        assert "fact number 0" not in said and said[-1] == "what do you remember?"

        # The dashboard edits a message the summary covers: the summary no longer matches.
        await owner.execute(
            "update public.messages set content = 'fact number zero, corrected'"
            " where conversation_id = $1 and seq = 1",
            uuid.UUID(conversation),
        )
        await send(client, user, conversation, "and now?")
        prompt = _prompt(fake_llm)
        assert not any(summary["content"] in str(m["content"]) for m in prompt)


async def test_a_summary_made_before_history_changed_is_never_stored(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User
) -> None:
    await owner.execute("insert into public.avatars (user_id, name) values ($1, 'Ava')", user.id)
    conversation_id = await owner.fetchval(
        "insert into public.conversations (user_id) values ($1) returning id", user.id
    )
    await owner.execute(
        "insert into public.messages (conversation_id, user_id, role, content)"
        " select $1, $2, 'user', 'm' || i from generate_series(1, 3) i",
        conversation_id,
        user.id,
    )
    revision = await owner.fetchval(
        "select revision from public.conversations where id = $1", conversation_id
    )
    claims = json.dumps(claims_of(user))
    stale, fresh = revision, revision + 1
    await owner.execute("delete from public.messages where conversation_id = $1 and seq = 2", conversation_id)
    stored = await conn.fetchval(
        "select avatar_chat.save_summary($1, $2, 2, $3, 'made before the delete')",
        claims,
        conversation_id,
        stale,
    )
    assert stored is False
    assert await conn.fetchval(
        "select avatar_chat.save_summary($1, $2, 3, $3, 'current')", claims, conversation_id, fresh
    )
    # An older or equal summary never replaces a newer one.
    assert not await conn.fetchval(
        "select avatar_chat.save_summary($1, $2, 2, $3, 'older')", claims, conversation_id, fresh
    )
    async with as_role(conn, "authenticated", claims_of(user)):
        rows = await conn.fetch("select content from public.conversation_summaries")
    assert [r["content"] for r in rows] == ["current"]


@pytest.mark.slow
async def test_a_worker_that_dies_mid_summary_leaves_nothing_half_written(
    settings: Settings, database_url: str, fake_llm: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    fake_llm.reset()
    fake_llm.complete_scenario = "hang"  # the summary request gets no answer
    env = {
        "LLM_BASE_URL": fake_llm.base_url,
        "LLM_API_KEY": "test-key",
        "CHAT_WINDOW_MESSAGES": str(WINDOW),
        "WORKER_TTL_S": "1",  # its summary's claim ends with its liveness row
    }
    async with ServerProcess(database_url=database_url, env=env) as server:
        async with server.client() as client:
            await create_avatar(client, user)
            conversation = (await create_conversation(client, user))["id"]
            for i in range(4):
                assert (await send(client, user, conversation, f"fact number {i}")).status_code == 201
            deadline = time.monotonic() + 10
            while not any(r.get("stream") is not True for r in fake_llm.requests):
                assert time.monotonic() < deadline, "no summary was asked for"
                await asyncio.sleep(0.02)
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # mid-summary

    assert (
        await owner.fetchval(
            "select count(*) from public.conversation_summaries where conversation_id = $1",
            uuid.UUID(conversation),
        )
        == 0
    )
    # The dead worker's claim on the summary lasts until its liveness row expires.
    claimed_by = "select worker_id from avatar_chat.summary_claims where conversation_id = $1"
    assert await owner.fetchval(claimed_by, uuid.UUID(conversation)) is not None
    deadline = time.monotonic() + 10
    while await owner.fetchval(
        f"select exists (select from avatar_chat.workers where id = ({claimed_by}) and expires_at > now())",
        uuid.UUID(conversation),
    ):
        assert time.monotonic() < deadline, "the dead worker's claim never expired"
        await asyncio.sleep(0.1)
    fake_llm.complete_scenario = None
    async for client in app_with_provider(settings, fake_llm.base_url, chat_window_messages=WINDOW):
        rows = await history(client, user, conversation)
        assert [m["status"] for m in rows] == ["complete"] * 8
        # The next turn, on another worker, makes the summary the dead one did not.
        assert (await send(client, user, conversation, "still there?")).status_code == 201
        summary = await _summary(owner, conversation)
        assert summary["covers_upto_seq"] == 10 - WINDOW // 2


def _summary_requests(fake: FakeOpenAIServer) -> int:
    return sum(1 for r in fake.requests if r.get("stream") is not True)


@pytest.mark.slow
async def test_one_summary_at_a_time_per_conversation_across_workers(
    database_url: str, fake_llm: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    """Two turns on two servers both find a summary due: the second finds the first one
    running and does not start. Once it is saved, the next due turn makes the next one."""
    fake_llm.reset()
    fake_llm.complete_scenario = "hang"  # every summary takes long_delay_s, then is answered
    long_delay_s, fake_llm.long_delay_s = fake_llm.long_delay_s, 2.0
    env = {"LLM_BASE_URL": fake_llm.base_url, "LLM_API_KEY": "test-key", "CHAT_WINDOW_MESSAGES": str(WINDOW)}
    try:
        async with (
            ServerProcess(database_url=database_url, env=env) as a,
            ServerProcess(database_url=database_url, env=env) as b,
            a.client() as ca,
            b.client() as cb,
        ):
            await create_avatar(ca, user)
            conversation = (await create_conversation(ca, user))["id"]
            for i in range(4):  # 8 messages: a summary is due, server A starts it
                assert (await send(ca, user, conversation, f"fact number {i}")).status_code == 201
            deadline = time.monotonic() + 10
            while _summary_requests(fake_llm) == 0:
                assert time.monotonic() < deadline, "no summary was asked for"
                await asyncio.sleep(0.02)
            # 10 messages, no summary stored yet: due again, on server B, while A's runs.
            assert (await send(cb, user, conversation, "fact number 4")).status_code == 201
            summary = await _summary(owner, conversation)
            assert summary["covers_upto_seq"] == 8 - WINDOW // 2
            await asyncio.sleep(0.5)  # B's summary, had it started, would have asked by now
            assert _summary_requests(fake_llm) == 1
            assert (
                await owner.fetchval(
                    "select count(*) from avatar_chat.summary_claims where conversation_id = $1",
                    uuid.UUID(conversation),
                )
                == 0
            )  # released once saved

            # 12 then 14 messages: due again (more than 6 after seq 6), on B this time.
            for i in range(5, 7):
                assert (await send(cb, user, conversation, f"fact number {i}")).status_code == 201
            deadline = time.monotonic() + 10
            while (await _summary(owner, conversation))["covers_upto_seq"] != 14 - WINDOW // 2:
                assert time.monotonic() < deadline, "the next summary was not made"
                await asyncio.sleep(0.05)
            assert _summary_requests(fake_llm) == 2
    finally:
        fake_llm.reset()
        fake_llm.long_delay_s = long_delay_s


def test_the_offline_summary_is_extractive_deterministic_and_bounded() -> None:
    avatar = avatar_snapshot(personality="caring")
    messages = tuple(
        PromptMessage("user" if i % 2 == 0 else "assistant", f"Sentence {i}. And more text {i}.")
        for i in range(40)
    )
    request = SummaryRequest(avatar=avatar, previous="User: earlier", messages=messages, max_chars=300)
    summary = offline_summary(request)
    assert summary == offline_summary(request)
    assert len(summary) <= 300 and summary.endswith("Ava: Sentence 39.")
    assert "And more text" not in summary


def test_the_prompt_keeps_summary_and_the_newest_messages_within_the_budget() -> None:
    avatar = avatar_snapshot(personality="caring")
    window = [
        WindowMessage(seq, "user" if seq % 2 else "assistant", f"message {seq} " + "x" * 200)
        for seq in range(1, 21)
    ]
    request = build_request(
        avatar, "assistant", window, "now", summary="the summary", summary_seq=5, budget_tokens=400
    )
    contents = [m.content for m in request.messages]
    assert "the summary" in contents[1]
    kept = [int(c.split()[1]) for c in contents[2:-1]]
    assert kept == sorted(kept) and kept[-1] == 20 and kept[0] > 5  # newest kept, nothing the summary covers
    assert sum(len(c) for c in contents) <= 400 * 4
