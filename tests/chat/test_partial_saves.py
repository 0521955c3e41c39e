"""How often a reply being generated writes its text so far (CHAT_PARTIAL_SAVE_MS/_CHARS):
never for a reply done within the first interval, at a bounded rate for a slow one."""

from __future__ import annotations

import time

from avatar_chat.core.settings import Settings
from tests.support.apps import own_app
from tests.support.factories import User, create_chat, send

LONG = "tell me everything about the sea, the ships, the storms and the lighthouses, slowly"


async def test_a_reply_done_within_the_first_interval_is_saved_once(settings: Settings, user: User) -> None:
    async with own_app(
        settings, offline_llm_chunk_delay_ms=0, chat_partial_save_ms=250, chat_partial_save_chars=10
    ) as (client, state):
        conversation = await create_chat(client, user)
        for _ in range(5):
            reply = (await send(client, user, conversation, LONG)).json()["assistant_message"]
            assert reply["status"] == "complete" and len(reply["content"]) > 10
        # Far more than CHAT_PARTIAL_SAVE_CHARS each, but nothing to save before the end.
        assert state.chat.stats.partial_saves == 0


async def test_a_slow_reply_is_saved_at_the_configured_rate(settings: Settings, user: User) -> None:
    async with own_app(
        settings, offline_llm_chunk_delay_ms=40, chat_partial_save_ms=100, chat_partial_save_chars=100_000
    ) as (client, state):
        conversation = await create_chat(client, user)
        started = time.monotonic()
        reply = (await send(client, user, conversation, LONG)).json()["assistant_message"]
        elapsed = time.monotonic() - started
        assert reply["status"] == "complete"
        assert elapsed > 0.3  # many intervals: this reply had to be saved on the way
        assert 1 <= state.chat.stats.partial_saves <= elapsed / 0.1 + 1
