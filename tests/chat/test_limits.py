"""Abuse limits: held in Postgres (so they hold across workers), 429 + Retry-After; body cap 413."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.assertions import assert_error
from tests.support.factories import (
    User,
    away_from_minute_boundary,
    create_avatar,
    create_conversation,
    history,
    send,
)
from tests.support.servers import ServerProcess


@pytest.fixture
async def limits(owner: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    yield owner
    await owner.execute("select avatar_chat.configure_limits(0, 0)")


async def test_sends_per_minute(
    app_client: httpx.AsyncClient, user: User, limits: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    await away_from_minute_boundary()
    await limits.execute("select avatar_chat.configure_limits(3, 0)")
    for i in range(3):
        assert (await send(app_client, user, conversation["id"], f"m{i}")).status_code == 201
    refused = await send(app_client, user, conversation["id"], "one too many")
    assert_error(refused, 429, "rate_limited")
    assert refused.json()["error"]["message"] == "Too many messages this minute; retry later."
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert len(await history(app_client, user, conversation["id"])) == 6  # the refused send left nothing


SENDS = 6


def _turn(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.slow
async def test_regenerate_and_edit_count_as_sends_across_workers(
    database_url: str, user: User, owner: asyncpg.Connection, limits: asyncpg.Connection
) -> None:
    """Every model call counts once against RATE_LIMIT_SENDS_PER_MINUTE, whichever of two
    servers it reaches: sends, regenerates and edits alike; a replayed key counts nothing."""
    env = {"RATE_LIMIT_SENDS_PER_MINUTE": str(SENDS)}
    async with (
        ServerProcess(database_url=database_url, env=env) as a,
        ServerProcess(database_url=database_url, env=env) as b,
        a.client() as ca,
        b.client() as cb,
    ):
        await create_avatar(ca, user)
        conversation = (await create_conversation(ca, user))["id"]
        base = f"/conversations/{conversation}/messages"
        keyed = {**user.headers, "Idempotency-Key": "regen-1"}
        await away_from_minute_boundary(15)

        sent = _turn(await send(ca, user, conversation, "hello", key="send-1"))  # 1
        replayed = _turn(await send(cb, user, conversation, "hello", key="send-1"))  # a replay: 1
        assert replayed["assistant_message"]["id"] == sent["assistant_message"]["id"]
        regenerated = _turn(
            await cb.post(f"{base}/{sent['assistant_message']['id']}/regenerate", headers=keyed)
        )  # 2
        again = _turn(
            await ca.post(f"{base}/{sent['assistant_message']['id']}/regenerate", headers=keyed)
        )  # the same key: a replay, 2
        assert again["assistant_message"]["id"] == regenerated["assistant_message"]["id"]
        user_message = sent["user_message"]["id"]
        _turn(await ca.patch(f"{base}/{user_message}", json={"content": "hi"}, headers=user.headers))  # 3
        second = _turn(await send(cb, user, conversation, "and then?"))  # 4
        reply = second["assistant_message"]["id"]
        _turn(await ca.post(f"{base}/{reply}/regenerate", headers=user.headers))  # 5
        edited = _turn(
            await cb.patch(
                f"{base}/{second['user_message']['id']}", json={"content": "and?"}, headers=user.headers
            )
        )  # 6
        assert (
            await owner.fetchval("select sends from avatar_chat.send_counters where user_id = $1", user.id)
            == SENDS
        )

        before = await history(ca, user, conversation)
        latest = edited["assistant_message"]["id"]
        refusals = [
            await ca.post(f"{base}/{latest}/regenerate", headers=user.headers),
            await cb.patch(
                f"{base}/{edited['user_message']['id']}", json={"content": "edited"}, headers=user.headers
            ),
            await send(cb, user, conversation, "one too many"),
        ]
        for refused in refusals:
            assert_error(refused, 429, "rate_limited")
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert await history(ca, user, conversation) == before  # refused: nothing changed


async def test_concurrent_streams_cap(
    app_client: httpx.AsyncClient, user: User, owner: asyncpg.Connection, limits: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    # A reply being generated right now, by some worker somewhere.
    await owner.execute(
        "insert into public.messages (conversation_id, user_id, role, content, status, lease_expires_at)"
        " values ($1, $2, 'assistant', '', 'streaming', now() + interval '1 minute')",
        conversation["id"],
        user.id,
    )
    await limits.execute("select avatar_chat.configure_limits(0, 1)")
    refused = await send(app_client, user, conversation["id"], "while another reply streams")
    assert_error(refused, 429, "too_many_streams")
    assert refused.json()["error"]["message"] == (
        "Too many replies are being generated at once; retry when one finishes."
    )
    assert refused.headers["Retry-After"] == "2"
    await owner.execute("update public.messages set status = 'complete' where user_id = $1", user.id)
    assert (await send(app_client, user, conversation["id"], "now")).status_code == 201


async def test_body_size_cap(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    url = f"/conversations/{conversation['id']}/messages"
    big = b'{"content": "' + b"x" * 70_000 + b'"}'
    response = await app_client.post(
        url, content=big, headers={**user.headers, "Content-Type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b'{"content": "'
        for _ in range(10):
            yield b"y" * 10_000
        yield b'"}'

    response = await app_client.post(
        url, content=chunks(), headers={**user.headers, "Content-Type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")
    assert await history(app_client, user, conversation["id"]) == []
