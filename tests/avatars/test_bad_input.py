"""G6: bad input is a clear 4xx in the one error shape, never a 500, and changes nothing."""

from __future__ import annotations

import asyncpg
import httpx

from tests.support.assertions import assert_error
from tests.support.factories import User, create_avatar


async def test_malformed_json(app_client: httpx.AsyncClient, user: User) -> None:
    response = await app_client.post(
        "/avatars/me",
        content=b'{"name": "Ava",',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 422, "validation_failed")
    assert_error(await app_client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")


async def test_wrong_types(app_client: httpx.AsyncClient, user: User) -> None:
    body: object
    for body in (
        {"name": 5},
        {"name": ["Ava"]},
        {"name": "Ava", "backstory": {"a": 1}},
        [],
        "Ava",
        None,
    ):
        assert_error(
            await app_client.post("/avatars/me", json=body, headers=user.headers),
            422,
            "validation_failed",
        )
    assert_error(await app_client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")


async def test_overlong_strings(app_client: httpx.AsyncClient, user: User) -> None:
    assert_error(
        await app_client.post("/avatars/me", json={"name": "x" * 81}, headers=user.headers),
        422,
        "validation_failed",
    )
    assert_error(
        await app_client.post(
            "/avatars/me", json={"name": "Ava", "backstory": "x" * 4001}, headers=user.headers
        ),
        422,
        "validation_failed",
    )
    await create_avatar(app_client, user, name="x" * 80, backstory="y" * 4000)
    assert_error(
        await app_client.patch("/avatars/me", json={"backstory": "y" * 4001}, headers=user.headers),
        422,
        "validation_failed",
    )


async def test_value_postgres_refuses_is_422(app_client: httpx.AsyncClient, user: User) -> None:
    # Valid JSON and valid for pydantic, but Postgres text cannot hold NUL.
    response = await app_client.post("/avatars/me", json={"name": "A\u0000va"}, headers=user.headers)
    assert_error(response, 422, "invalid_value")
    assert_error(await app_client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")


async def test_token_of_deleted_user(
    app_client: httpx.AsyncClient, user: User, owner: asyncpg.Connection
) -> None:
    await owner.execute("delete from auth.users where id = $1", user.id)
    # The token still verifies; the database refuses it on every route, at once.
    assert_error(
        await app_client.post("/avatars/me", json={"name": "Ava"}, headers=user.headers),
        401,
        "user_not_found",
    )
    response = await app_client.get("/avatars/me", headers=user.headers)
    assert_error(response, 401, "user_not_found")
    assert "invalid_token" in response.headers["www-authenticate"]
    assert_error(
        await app_client.patch("/avatars/me/persona", json={"personality": "witty"}, headers=user.headers),
        401,
        "user_not_found",
    )


async def test_deleting_the_user_cascades_to_the_avatar(
    app_client: httpx.AsyncClient, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    await owner.execute("delete from auth.users where id = $1", user.id)
    assert await owner.fetchval("select count(*) from public.avatars where user_id = $1", user.id) == 0
    assert_error(
        await app_client.patch("/avatars/me/persona", json={"personality": "witty"}, headers=user.headers),
        401,
        "user_not_found",
    )


async def test_unknown_route_and_method(app_client: httpx.AsyncClient, user: User) -> None:
    assert_error(await app_client.get("/nope", headers=user.headers), 404, "not_found")
    assert_error(
        await app_client.put("/avatars/me", json={}, headers=user.headers),
        405,
        "method_not_allowed",
    )


async def test_overlong_if_match_header(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    response = await app_client.patch(
        "/avatars/me/persona",
        json={"personality": "witty"},
        headers={**user.headers, "If-Match": '"1",' * 1000},
    )
    assert_error(response, 422, "validation_failed")
