"""Choosing which alternative reply is current (PUT .../messages/{id}/current): history
shows it and the model reads it in the turns that follow, on every worker (the revision
bump makes cached windows miss)."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.assertions import assert_error
from tests.support.factories import User, create_chat, history, send


async def _regenerate(client: httpx.AsyncClient, user: User, chat: str, reply_id: str) -> dict[str, object]:
    answer = await client.post(f"/conversations/{chat}/messages/{reply_id}/regenerate", headers=user.headers)
    assert answer.status_code == 201, answer.text
    reply: dict[str, object] = answer.json()["assistant_message"]
    return reply


async def test_a_chosen_alternative_is_shown_and_read_next(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User, other_user: User
) -> None:
    fake.number_replies = True  # every reply's text is its own
    chat = await create_chat(llm_client, user)
    first = (await send(llm_client, user, chat, "Tell me a story")).json()["assistant_message"]
    second = await _regenerate(llm_client, user, chat, str(first["id"]))
    third = await _regenerate(llm_client, user, chat, str(second["id"]))
    assert (await history(llm_client, user, chat))[-1]["id"] == third["id"]

    chosen = await llm_client.put(
        f"/conversations/{chat}/messages/{first['id']}/current", headers=user.headers
    )
    assert chosen.status_code == 200, chosen.text
    assert (chosen.json()["id"], chosen.json()["is_current"]) == (first["id"], True)
    shown = await history(llm_client, user, chat)
    assert [m["id"] for m in shown][-1] == first["id"]
    variants = (
        await llm_client.get(f"/conversations/{chat}/messages/{first['id']}/variants", headers=user.headers)
    ).json()
    assert [(v["id"], v["is_current"]) for v in variants["items"]] == [
        (first["id"], True),
        (second["id"], False),
        (third["id"], False),
    ]
    # The next turn's prompt holds the chosen reply, not the one that was current before.
    assert (await send(llm_client, user, chat, "And then?")).status_code == 201
    prompt = [m["content"] for m in fake.requests[-1]["messages"]]
    assert first["content"] in prompt and third["content"] not in prompt
    # Choosing the current one again changes nothing; it answers the reply.
    again = await llm_client.put(
        f"/conversations/{chat}/messages/{first['id']}/current", headers=user.headers
    )
    assert again.status_code == 200 and again.json()["is_current"] is True


async def test_what_cannot_be_chosen(llm_client: httpx.AsyncClient, user: User, other_user: User) -> None:
    chat = await create_chat(llm_client, user)
    sent = (await send(llm_client, user, chat, "hello")).json()
    url = f"/conversations/{chat}/messages"
    assert_error(
        await llm_client.put(f"{url}/{sent['user_message']['id']}/current", headers=user.headers),
        404,
        "message_not_found",
    )
    assert_error(
        await llm_client.put(f"{url}/{sent['assistant_message']['id']}/current", headers=other_user.headers),
        404,
        "conversation_not_found",
    )
    assert_error(
        await llm_client.put(f"{url}/{uuid.uuid4()}/current", headers=user.headers), 404, "message_not_found"
    )


async def test_not_while_a_reply_to_the_same_message_is_generated(
    llm_client: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    chat = await create_chat(llm_client, user)
    first = (await send(llm_client, user, chat, "hello")).json()["assistant_message"]
    fake.default_scenario = "slow"
    fake.reply = "word " * 60
    regenerating = asyncio.create_task(
        llm_client.post(f"/conversations/{chat}/messages/{first['id']}/regenerate", headers=user.headers)
    )
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any(m["status"] == "streaming" for m in await history(llm_client, user, chat)):
                break
        refused = await llm_client.put(
            f"/conversations/{chat}/messages/{first['id']}/current", headers=user.headers
        )
        assert_error(refused, 409, "reply_in_progress")
    finally:
        assert (await regenerating).status_code == 201
