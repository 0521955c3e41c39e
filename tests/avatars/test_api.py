"""The avatar API over HTTP (in-process), against the real migrated database."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.support.assertions import assert_error
from tests.support.factories import User, create_avatar


async def test_create_get_and_second_create_conflicts(app_client: httpx.AsyncClient, user: User) -> None:
    response = await app_client.post(
        "/avatars/me", json={"name": "Ava", "personality": "caring"}, headers=user.headers
    )
    assert response.status_code == 201
    created = response.json()
    assert created["user_id"] == str(user.id)
    assert created["personality"] == "caring"
    assert created["version"] == 1
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Location"] == "/avatars/me"

    response = await app_client.get("/avatars/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["ETag"] == '"1"'

    again = await app_client.post("/avatars/me", json={"name": "Bob"}, headers=user.headers)
    assert_error(again, 409, "avatar_exists")


async def test_persona_switch_writes_enum_value_and_bumps_version(
    app_client: httpx.AsyncClient, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    response = await app_client.patch(
        "/avatars/me/persona", json={"personality": "witty"}, headers=user.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["personality"] == "witty"
    assert body["version"] == 2
    assert response.headers["ETag"] == '"2"'
    stored = await owner.fetchrow(
        "select personality::text as p, version from public.avatars where user_id = $1", user.id
    )
    assert stored is not None
    assert (stored["p"], stored["version"]) == ("witty", 2)


async def test_unknown_personality_is_422_and_changes_nothing(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user)
    for bad in ("grumpy", "WITTY", 3, None, ""):
        response = await app_client.patch(
            "/avatars/me/persona", json={"personality": bad}, headers=user.headers
        )
        assert_error(response, 422, "validation_failed")
    current = (await app_client.get("/avatars/me", headers=user.headers)).json()
    assert (current["personality"], current["version"]) == ("friendly", 1)


async def test_no_avatar_is_404_everywhere(app_client: httpx.AsyncClient, user: User) -> None:
    assert_error(await app_client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")
    assert_error(
        await app_client.patch("/avatars/me", json={"name": "X"}, headers=user.headers),
        404,
        "avatar_not_found",
    )
    assert_error(
        await app_client.patch("/avatars/me/persona", json={"personality": "witty"}, headers=user.headers),
        404,
        "avatar_not_found",
    )
    assert_error(await app_client.delete("/avatars/me", headers=user.headers), 404, "avatar_not_found")


async def test_patch_changes_only_sent_fields(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user, backstory="Keeps this.")
    response = await app_client.patch("/avatars/me", json={"name": "  Nova  "}, headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["backstory"], body["personality"], body["version"]) == (
        "Nova",
        "Keeps this.",
        "friendly",
        2,
    )


async def test_patch_rejects_empty_null_and_unknown_fields(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    for body in ({}, {"name": None}, {"personality": None}, {"colour": "red"}, {"name": "   "}):
        assert_error(
            await app_client.patch("/avatars/me", json=body, headers=user.headers),
            422,
            "validation_failed",
        )
    current = (await app_client.get("/avatars/me", headers=user.headers)).json()
    assert current["version"] == 1


async def test_delete(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    response = await app_client.delete("/avatars/me", headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await app_client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")


async def test_if_match(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)

    async def persona(value: str, if_match: str) -> httpx.Response:
        return await app_client.patch(
            "/avatars/me/persona",
            json={"personality": value},
            headers={**user.headers, "If-Match": if_match},
        )

    ok = await persona("playful", '"1"')
    assert ok.status_code == 200 and ok.json()["version"] == 2

    stale = await persona("witty", '"1"')
    assert_error(stale, 412, "precondition_failed")
    assert stale.headers["ETag"] == '"2"'

    for garbage in ('W/"2"', "2", "nonsense", '"two"', '"2" junk'):
        assert_error(await persona("witty", garbage), 412, "precondition_failed")

    assert (await persona("caring", '"7", "2"')).status_code == 200
    assert (await persona("witty", "*")).status_code == 200
    final = (await app_client.get("/avatars/me", headers=user.headers)).json()
    assert (final["personality"], final["version"]) == ("witty", 4)


async def test_concurrent_patches_with_same_if_match_exactly_one_wins(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user)
    personalities = ["playful", "caring", "witty", "professional"] * 5
    responses = await asyncio.gather(
        *(
            app_client.patch(
                "/avatars/me/persona",
                json={"personality": p},
                headers={**user.headers, "If-Match": '"1"'},
            )
            for p in personalities
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * (len(personalities) - 1)
    winner = next(r for r in responses if r.status_code == 200).json()
    final = (await app_client.get("/avatars/me", headers=user.headers)).json()
    assert final["version"] == 2
    assert final["personality"] == winner["personality"]
