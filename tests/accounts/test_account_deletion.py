"""DELETE /me on the embedded default (the auth.users row; files on local disk). Through
Supabase Auth's admin API and Storage: tests/accounts/test_supabase_account_deletion.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.state import AppState
from tests.support.assertions import assert_error
from tests.support.databases import user_rows
from tests.support.factories import User, create_avatar, create_conversation, send
from tests.support.images import image_bytes


@pytest.fixture
async def second_worker(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another app on the same database (another worker, another machine)."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_deleting_my_account_deletes_everything_and_the_token_stops_working(
    app_client: httpx.AsyncClient,
    app_state: AppState,
    second_worker: httpx.AsyncClient,
    owner: asyncpg.Connection,
    user: User,
    other_user: User,
) -> None:
    await create_avatar(app_client, user)
    await create_avatar(app_client, other_user)
    assert (
        await app_client.put("/avatars/me/image", content=image_bytes(), headers=user.headers)
    ).status_code == 200
    conversation = (await create_conversation(app_client, user))["id"]
    await send(app_client, user, conversation, "remember me")
    # The other worker has this user's avatar cached from a chat turn.
    await send(second_worker, user, conversation, "and me")
    others_before = await user_rows(owner, other_user)

    assert (await app_client.delete("/me", headers=user.headers)).status_code == 204

    assert set((await user_rows(owner, user)).values()) == {0}
    assert await app_state.images.list_folder(str(user.id)) == []
    # The token still verifies, but on every worker every route refuses it at once.
    for client in (app_client, second_worker):
        for method, path, body in (
            ("GET", "/avatars/me", None),
            ("PATCH", "/avatars/me/persona", {"personality": "witty"}),
            ("POST", "/avatars/me", {"name": "Back"}),
            ("GET", "/conversations", None),
            ("POST", f"/conversations/{conversation}/messages", {"content": "hello?"}),
        ):
            response = await client.request(method, path, json=body, headers=user.headers)
            assert_error(response, 401, "user_not_found")
    # Repeating it is fine (a client retrying after a lost answer), and nobody else lost anything.
    assert (await second_worker.delete("/me", headers=user.headers)).status_code == 204
    assert await user_rows(owner, other_user) == others_before
    assert (await app_client.get("/avatars/me", headers=other_user.headers)).status_code == 200


async def test_deleting_an_account_without_anything_in_it(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User
) -> None:
    assert (await app_client.delete("/me", headers=user.headers)).status_code == 204
    assert (await user_rows(owner, user))["auth.users"] == 0


async def test_deleting_needs_a_valid_token(app_client: httpx.AsyncClient) -> None:
    assert_error(await app_client.delete("/me"), 401, "missing_token")
    assert_error(
        await app_client.delete("/me", headers={"Authorization": "Bearer x.y.z"}), 401, "malformed_token"
    )
