"""What the model is given after history changes: deleted text never, edited text as
edited, one alternative per reply (the current one). Checked in the prompts a fake
OpenAI-compatible provider received, through the API, with the window cache warm."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.factories import User, create_avatar, create_conversation, send


def _prompt(fake: FakeOpenAIServer) -> str:
    """Every message of the last request the provider received, as one text."""
    messages: list[dict[str, Any]] = fake.requests[-1]["messages"]
    return "\n".join(str(m["content"]) for m in messages)


async def test_deleted_text_never_reaches_the_provider(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    await create_avatar(llm_client, user)
    conversation = (await create_conversation(llm_client, user))["id"]
    secret = await send(llm_client, user, conversation, "my secret is walrus-42")
    await send(llm_client, user, conversation, "second message")
    await send(llm_client, user, conversation, "third message")  # the window is cached by now
    assert "walrus-42" in _prompt(fake)
    deleted = await llm_client.delete(
        f"/conversations/{conversation}/messages/{secret.json()['user_message']['id']}", headers=user.headers
    )
    assert deleted.status_code == 204
    await send(llm_client, user, conversation, "what was my secret?")
    prompt = _prompt(fake)
    assert "walrus-42" not in prompt
    assert "second message" in prompt and "third message" in prompt


async def test_the_model_sees_the_edited_text_and_only_the_current_alternative(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    fake.number_replies = True  # a regeneration says something else than the reply it replaces
    await create_avatar(llm_client, user)
    conversation = (await create_conversation(llm_client, user))["id"]
    await send(llm_client, user, conversation, "warm up")
    sent = (await send(llm_client, user, conversation, "draft with a typo")).json()
    edited = await llm_client.patch(
        f"/conversations/{conversation}/messages/{sent['user_message']['id']}",
        json={"content": "draft without the typo"},
        headers=user.headers,
    )
    assert edited.status_code == 201, edited.text
    prompt = _prompt(fake)
    assert "draft without the typo" in prompt and "with a typo" not in prompt
    first_reply = edited.json()["assistant_message"]
    regenerated = await llm_client.post(
        f"/conversations/{conversation}/messages/{first_reply['id']}/regenerate", headers=user.headers
    )
    assert regenerated.status_code == 201, regenerated.text
    current = regenerated.json()["assistant_message"]["content"]
    assert current != first_reply["content"]
    await send(llm_client, user, conversation, "and now?")
    assistant_turns = [m["content"] for m in fake.requests[-1]["messages"] if m["role"] == "assistant"]
    # Each earlier reply once, as its current alternative: not the one regenerated away.
    assert assistant_turns[-1] == current and first_reply["content"] not in assistant_turns
    assert len(assistant_turns) == 2
