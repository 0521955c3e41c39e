"""Abuse limits: held in Postgres (so they hold across workers), 429 + Retry-After; body cap 413."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
