"""G6: bad input is a clear 4xx in the one error shape, never a 500, and changes nothing."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from avatar_chat.core.db_errors import translate
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


async def test_a_nul_character_is_refused_by_the_schema_before_postgres(
    app_client: httpx.AsyncClient, user: User
) -> None:
    # Postgres text cannot hold NUL: the schema says so (its pattern), so the request is
    # refused as invalid with the field named, before anything reaches the database.
    for body in ({"name": "A\u0000va"}, {"name": "Ava", "backstory": "x\u0000"}):
        response = await app_client.post("/avatars/me", json=body, headers=user.headers)
        assert_error(response, 422, "validation_failed")
        assert response.json()["error"]["details"][0]["loc"] == ["body", next(reversed(body))]
    assert_error(await app_client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")


async def test_a_value_postgres_refuses_is_422_invalid_value(owner: asyncpg.Connection) -> None:
    # Whatever a schema lets through and Postgres cannot hold is still a 422, not a 500.
    with pytest.raises(asyncpg.DataError) as refused:
        await owner.fetchval("select $1::text", "A\u0000va")
    error = translate(refused.value)
    assert error is not None and (error.status_code, error.code) == (422, "invalid_value")


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
