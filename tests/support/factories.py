"""Plain async factories: `create_x(conn, **overrides)`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.avatars.persona import AvatarSnapshot

TEST_JWT_SECRET = "test-secret-" + "x" * 40


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def claims_json(self) -> str:
        return json.dumps({"sub": str(self.id), "role": "authenticated", "aud": "authenticated"})


async def create_user(owner: asyncpg.Connection, *, email: str | None = None) -> User:
    user_id = uuid.uuid4()
    email = email or f"{user_id.hex[:12]}@example.test"
    await owner.execute("insert into auth.users (id, email) values ($1, $2)", user_id, email)
    token = mint_access_token(TEST_JWT_SECRET, user_id=user_id, email=email)
    return User(user_id, email, token)


def avatar_snapshot(**overrides: Any) -> AvatarSnapshot:
    """An avatar as a chat turn reads it, without a database: new ids, "Ava", friendly, no
    backstory, version 1, unless overridden."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "name": "Ava",
        "personality": "friendly",
        "backstory": "",
        "version": 1,
    }
    return AvatarSnapshot(**(values | overrides))


async def create_avatar(client: httpx.AsyncClient, user: User, **overrides: object) -> dict[str, Any]:
    body: dict[str, object] = {
        "name": "Ava",
        "personality": "friendly",
        "backstory": "A test avatar.",
    }
    body.update(overrides)
    response = await client.post("/avatars/me", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def create_conversation(client: httpx.AsyncClient, user: User, **overrides: object) -> dict[str, Any]:
    response = await client.post(
        "/conversations", json={"mode": "assistant", **overrides}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def create_chat(client: httpx.AsyncClient, user: User, **avatar: object) -> str:
    """An avatar for `user` (with these overrides) and a new conversation: its id."""
    await create_avatar(client, user, **avatar)
    conversation = await create_conversation(client, user)
    return str(conversation["id"])


async def send(
    client: httpx.AsyncClient, user: User, conversation_id: str, content: str, *, key: str | None = None
) -> httpx.Response:
    headers = dict(user.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(
        f"/conversations/{conversation_id}/messages", json={"content": content}, headers=headers
    )


async def history(client: httpx.AsyncClient, user: User, conversation_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await client.get(
            f"/conversations/{conversation_id}/messages",
            params={"after": after, "limit": 100},
            headers=user.headers,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        if not page["has_more"]:
            return items
        after = items[-1]["seq"]


async def away_from_minute_boundary(margin_s: float = 3.0) -> None:
    """The send limit counts per calendar minute: start a burst well inside one."""
    left = 60 - time.time() % 60
    if left < margin_s:
        await asyncio.sleep(left + 0.2)
