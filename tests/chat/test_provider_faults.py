"""Provider faults through the chat API: each gives a clear code, the user's message is
kept, the reply is saved as failed, and a retry with the same Idempotency-Key works."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from avatar_chat.core.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.apps import app_with_provider
from tests.support.assertions import assert_error
from tests.support.factories import User, create_avatar, create_conversation, history, send
from tests.support.sse import parse_sse

FAULTS = [
    ("status_429", 502, "provider_rate_limited"),
    ("status_500", 502, "provider_error"),
    ("status_401", 502, "provider_auth_failed"),
    ("first_token_delay", 504, "provider_timeout"),
    ("hang", 504, "provider_timeout"),
    ("stall", 504, "provider_stalled"),
    ("break", 502, "provider_stream_broken"),
    ("malformed", 502, "provider_bad_response"),
    ("empty", 502, "provider_empty_reply"),
]


@pytest.mark.parametrize(("scenario", "status", "code"), FAULTS)
async def test_fault_then_retry(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User, scenario: str, status: int, code: str
) -> None:
    await create_avatar(llm_client, user)
    conversation = await create_conversation(llm_client, user)
    fake.default_scenario = scenario
    failed = await send(llm_client, user, conversation["id"], "please answer", key="k1")
    assert_error(failed, status, code)
    details = failed.json()["error"]["details"]
    messages = await history(llm_client, user, conversation["id"])
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "failed")]
    assert messages[1]["error_code"] == code
    assert details["assistant_message_id"] == messages[1]["id"]

    fake.default_scenario = "ok"
    retried = await send(llm_client, user, conversation["id"], "please answer", key="k1")
    assert retried.status_code == 201, retried.text
    reply = retried.json()["assistant_message"]
    assert (reply["id"], reply["seq"], reply["status"]) == (messages[1]["id"], 2, "complete")
    assert reply["error_code"] is None
    after = await history(llm_client, user, conversation["id"])
    assert [(m["role"], m["status"]) for m in after] == [("user", "complete"), ("assistant", "complete")]


async def test_retryable_failures_are_retried_before_streaming(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    await create_avatar(llm_client, user)
    conversation = await create_conversation(llm_client, user)
    fake.fail_next(1, 503)
    response = await send(llm_client, user, conversation["id"], "flaky upstream")
    assert response.status_code == 201, response.text
    assert len(fake.requests) == 2  # one failure, one retry (LLM_MAX_RETRIES=1)


async def test_sse_error_event_keeps_the_partial_reply_marked_failed(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    await create_avatar(llm_client, user)
    conversation = await create_conversation(llm_client, user)
    fake.default_scenario = "break"
    response = await llm_client.post(
        f"/conversations/{conversation['id']}/messages",
        json={"content": "stream then break"},
        headers={**user.headers, "Accept": "text/event-stream"},
    )
    assert response.status_code == 201
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["user_message", "assistant_message", "delta", "delta", "error"]
    error: dict[str, Any] = events[-1][1]
    assert error["code"] == "provider_stream_broken"
    reply = (await history(llm_client, user, conversation["id"]))[1]
    assert reply["status"] == "failed"  # never shown as complete, though text was streamed


async def test_unreachable_provider(settings: Settings, user: User) -> None:
    # Refusals are instant, but the SDK's retry backoff must fit in the first-token deadline.
    async for client in app_with_provider(settings, FakeOpenAIServer.refused_url(), llm_timeout_s=10.0):
        await create_avatar(client, user)
        conversation = await create_conversation(client, user)
        assert_error(await send(client, user, conversation["id"], "anyone?"), 502, "provider_unreachable")


async def test_prompt_carries_persona_mode_and_the_fresh_window(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(llm_client, user, name="Orion", personality="professional", backstory="Ex-astronaut.")
    conversation = await create_conversation(llm_client, user, mode="companion")
    await send(llm_client, user, conversation["id"], "first question")
    await send(llm_client, user, conversation["id"], "second question")
    prompt = fake.requests[-1]["messages"]
    system = prompt[0]["content"]
    assert "Orion" in system and "professional" in system and "Ex-astronaut." in system
    assert "companion" in system.lower()
    assert [m["role"] for m in prompt[1:]] == ["user", "assistant", "user"]
    assert prompt[-1]["content"] == "second question"

    # An operator deletes the first exchange in the dashboard: the next prompt must not
    # carry it, on this worker whose window cache held it.
    await owner.execute(
        "delete from public.messages where conversation_id = $1 and seq <= 2", conversation["id"]
    )
    await send(llm_client, user, conversation["id"], "third question")
    contents = [m["content"] for m in fake.requests[-1]["messages"][1:]]
    assert "first question" not in json.dumps(contents)
    assert contents[0] == "second question"
