"""Persona history and undo: every avatar version is kept by trigger, whoever wrote it
(this API, the dashboard, any SQL client), readable by its owner only; a restore makes a
new version with an old persona, honouring If-Match, and the next chat turn uses it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from avatar_chat.ops.migrate import default_migrations_dir, migrate
from avatar_chat.state import AppState
from tests.support.assertions import assert_error
from tests.support.databases import as_role, claims_of, fresh_database
from tests.support.factories import User, create_avatar, create_conversation, create_user, send

HISTORY_MIGRATION = "20261201140000"


async def history_page(
    client: httpx.AsyncClient, user: User, **params: str | int
) -> tuple[list[dict[str, Any]], str | None]:
    response = await client.get("/avatars/me/history", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert set(page) == {"items", "next_cursor"}
    return page["items"], page["next_cursor"]


async def all_versions(client: httpx.AsyncClient, user: User) -> list[tuple[int, str, str, str]]:
    """(version, name, personality, backstory) of every page, newest first."""
    versions: list[tuple[int, str, str, str]] = []
    cursor: str | None = None
    while True:
        items, cursor = await history_page(client, user, limit=100, **({"cursor": cursor} if cursor else {}))
        versions += [(v["version"], v["name"], v["personality"], v["backstory"]) for v in items]
        if cursor is None:
            return versions


async def persona(client: httpx.AsyncClient, user: User, value: str) -> dict[str, Any]:
    response = await client.patch("/avatars/me/persona", json={"personality": value}, headers=user.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def restore(
    client: httpx.AsyncClient, user: User, version: object, if_match: str | None = None
) -> httpx.Response:
    headers = dict(user.headers)
    if if_match is not None:
        headers["If-Match"] = if_match
    return await client.post(f"/avatars/me/restore/{version}", headers=headers)


async def test_every_api_change_is_a_history_row(app_client: httpx.AsyncClient, user: User) -> None:
    created = await create_avatar(app_client, user, name="Ava", personality="friendly", backstory="b1")
    await persona(app_client, user, "witty")
    patched = await app_client.patch(
        "/avatars/me", json={"name": "Sage", "backstory": "b3"}, headers=user.headers
    )
    assert patched.status_code == 200 and patched.json()["version"] == 3

    items, next_cursor = await history_page(app_client, user)
    assert next_cursor is None
    assert [(v["version"], v["name"], v["personality"], v["backstory"]) for v in items] == [
        (3, "Sage", "witty", "b3"),
        (2, "Ava", "witty", "b1"),
        (1, "Ava", "friendly", "b1"),
    ]
    assert {v["avatar_id"] for v in items} == {created["id"]}
    assert {v["user_id"] for v in items} == {str(user.id)}
    # Each row is written with the version: its time is the avatar's updated_at then.
    assert items[0]["changed_at"] == patched.json()["updated_at"]
    assert items[-1]["changed_at"] == created["updated_at"]


async def test_dashboard_edits_are_history_rows_with_the_avatars_versions(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User
) -> None:
    # The table editor or SQL editor: no API call at all.
    avatar_id = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, 'Ava') returning id", user.id
    )
    await owner.execute("update public.avatars set personality = 'witty' where id = $1", avatar_id)
    await owner.execute(
        "update public.avatars set personality = 'caring', name = 'Sage', version = 99 where id = $1",
        avatar_id,
    )
    avatar_version = await owner.fetchval("select version from public.avatars where id = $1", avatar_id)
    assert avatar_version == 3

    rows = await owner.fetch(
        "select avatar_id, user_id, version, name, personality::text as personality"
        " from public.avatar_history where avatar_id = $1 order by version",
        avatar_id,
    )
    assert [(r["version"], r["name"], r["personality"]) for r in rows] == [
        (1, "Ava", "friendly"),
        (2, "Ava", "witty"),
        (3, "Sage", "caring"),
    ]
    assert {(r["avatar_id"], r["user_id"]) for r in rows} == {(avatar_id, user.id)}
    # The same rows through the API, and the avatar's ETag is the newest of them.
    assert [v[:3] for v in await all_versions(app_client, user)] == [
        (3, "Sage", "caring"),
        (2, "Ava", "witty"),
        (1, "Ava", "friendly"),
    ]
    current = await app_client.get("/avatars/me", headers=user.headers)
    assert current.headers["ETag"] == '"3"'


async def test_a_rolled_back_change_leaves_no_history(owner: asyncpg.Connection, user: User) -> None:
    avatar_id = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, 'Ava') returning id", user.id
    )
    tx = owner.transaction()
    await tx.start()
    await owner.execute("update public.avatars set name = 'Never' where id = $1", avatar_id)
    await tx.rollback()
    await owner.execute("update public.avatars set name = 'Kept' where id = $1", avatar_id)
    rows = await owner.fetch(
        "select version, name from public.avatar_history where avatar_id = $1 order by version", avatar_id
    )
    assert [(r["version"], r["name"]) for r in rows] == [(1, "Ava"), (2, "Kept")]


async def test_history_is_paginated_newest_first(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user, personality="friendly")
    for value in ("witty", "caring", "playful", "professional"):
        await persona(app_client, user, value)

    first, cursor = await history_page(app_client, user, limit=2)
    assert [v["version"] for v in first] == [5, 4] and cursor == "4"
    second, cursor = await history_page(app_client, user, limit=2, cursor=cursor)
    assert [v["version"] for v in second] == [3, 2] and cursor == "2"
    last, cursor = await history_page(app_client, user, limit=2, cursor=cursor)
    assert [v["version"] for v in last] == [1] and cursor is None

    # A page that ends exactly at the last version says so.
    exact, cursor = await history_page(app_client, user, limit=5)
    assert [v["version"] for v in exact] == [5, 4, 3, 2, 1] and cursor is None
    # The default page size is 20; a cursor above the newest version reads from the top.
    everything, cursor = await history_page(app_client, user)
    assert len(everything) == 5 and cursor is None
    top, _ = await history_page(app_client, user, limit=1, cursor="1000")
    assert [v["version"] for v in top] == [5]
    assert (await history_page(app_client, user, cursor="1")) == ([], None)


async def test_history_without_an_avatar_is_empty_and_deleting_the_avatar_deletes_it(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User
) -> None:
    assert await history_page(app_client, user) == ([], None)
    await create_avatar(app_client, user)
    await persona(app_client, user, "witty")
    assert (await app_client.delete("/avatars/me", headers=user.headers)).status_code == 204
    assert await history_page(app_client, user) == ([], None)
    assert await owner.fetchval("select count(*) from public.avatar_history where user_id = $1", user.id) == 0
    # A new avatar starts a new history at version 1.
    await create_avatar(app_client, user, personality="caring")
    assert [v[:3] for v in await all_versions(app_client, user)] == [(1, "Ava", "caring")]


async def test_bad_history_parameters_are_4xx(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    for limit in ("0", "101", "-1", "abc", "1.5", "9" * 30):
        response = await app_client.get("/avatars/me/history", params={"limit": limit}, headers=user.headers)
        assert_error(response, 422, "validation_failed")
    for cursor in ("abc", "0", "-1", "1.5", "00", "1e3", " 1", "²", "x" * 16, ""):
        response = await app_client.get(
            "/avatars/me/history", params={"cursor": cursor}, headers=user.headers
        )
        assert_error(response, 400, "invalid_cursor")
    # Over the schema's maxLength (16): refused as FastAPI refuses any parameter too long.
    for cursor in ("9" * 17, "x" * 32, "1" * 33):
        response = await app_client.get(
            "/avatars/me/history", params={"cursor": cursor}, headers=user.headers
        )
        assert_error(response, 422, "validation_failed")
    # Any version above the highest there can be reads from the newest.
    response = await app_client.get("/avatars/me/history", params={"cursor": "9" * 16}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["items"][0]["version"] == 1


async def test_restore_makes_a_new_version_that_the_next_reply_uses(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    await create_avatar(app_client, user, name="Ava", personality="friendly", backstory="First.")
    conversation = await create_conversation(app_client, user)
    patched = await app_client.patch(
        "/avatars/me",
        json={"name": "Rex", "personality": "witty", "backstory": "Second."},
        headers=user.headers,
    )
    assert patched.json()["version"] == 2
    before = (await send(app_client, user, conversation["id"], "who are you?")).json()["assistant_message"]
    assert (before["persona_version"], before["personality"]) == (2, "witty")
    assert await app_state.store.peek_avatar(user.id) is not None  # this worker cached version 2

    response = await restore(app_client, user, 1, if_match='"2"')
    assert response.status_code == 200, response.text
    restored = response.json()
    assert response.headers["ETag"] == '"3"'
    assert (restored["version"], restored["name"], restored["personality"], restored["backstory"]) == (
        3,
        "Ava",
        "friendly",
        "First.",
    )
    assert restored["created_at"] == patched.json()["created_at"]
    assert await app_state.store.peek_avatar(user.id) is None
    assert (await app_client.get("/avatars/me", headers=user.headers)).json() == restored

    # The restore is itself a version in the history; nothing before it changed.
    assert await all_versions(app_client, user) == [
        (3, "Ava", "friendly", "First."),
        (2, "Rex", "witty", "Second."),
        (1, "Ava", "friendly", "First."),
    ]
    after = (await send(app_client, user, conversation["id"], "and now?")).json()["assistant_message"]
    assert (after["persona_version"], after["personality"]) == (3, "friendly")
    assert "Ava" in after["content"]

    # Undo the undo: version 2 again, as version 4; If-Match is optional.
    again = await restore(app_client, user, 2)
    assert again.status_code == 200 and again.headers["ETag"] == '"4"'
    assert (again.json()["name"], again.json()["personality"]) == ("Rex", "witty")
    last = (await send(app_client, user, conversation["id"], "once more")).json()["assistant_message"]
    assert (last["persona_version"], last["personality"]) == (4, "witty")


async def test_restore_with_a_stale_if_match_is_412_and_changes_nothing(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    await create_avatar(app_client, user, personality="friendly")
    conversation = await create_conversation(app_client, user)
    await persona(app_client, user, "witty")
    await send(app_client, user, conversation["id"], "warm the cache")
    assert await app_state.store.peek_avatar(user.id) is not None

    stale = await restore(app_client, user, 1, if_match='"1"')
    assert_error(stale, 412, "precondition_failed")
    assert stale.headers["ETag"] == '"2"'
    assert await app_state.store.peek_avatar(user.id) is None  # cleared on failure too
    # Garbled or weak tags never match; stale beats an unknown version too.
    for if_match in ('W/"2"', "2", "nonsense", '"two"', '"2" junk', ""):
        assert_error(await restore(app_client, user, 1, if_match=if_match), 412, "precondition_failed")
    assert_error(await restore(app_client, user, 77, if_match='"1"'), 412, "precondition_failed")

    current = await app_client.get("/avatars/me", headers=user.headers)
    assert (current.json()["version"], current.json()["personality"]) == (2, "witty")
    assert [v[0] for v in await all_versions(app_client, user)] == [2, 1]

    assert (await restore(app_client, user, 1, if_match='"7", "2"')).status_code == 200
    assert (await restore(app_client, user, 2, if_match="*")).status_code == 200
    final = await app_client.get("/avatars/me", headers=user.headers)
    assert (final.json()["version"], final.json()["personality"]) == (4, "witty")


async def test_restore_of_a_version_not_in_my_history_is_404(
    app_client: httpx.AsyncClient, user: User
) -> None:
    assert_error(await restore(app_client, user, 1), 404, "avatar_not_found")
    assert_error(await restore(app_client, user, 1, if_match='"1"'), 404, "avatar_not_found")
    await create_avatar(app_client, user)
    await persona(app_client, user, "witty")
    for version in (3, 99, 2**53):
        assert_error(await restore(app_client, user, version), 404, "avatar_version_not_found")
        assert_error(
            await restore(app_client, user, version, if_match='"2"'), 404, "avatar_version_not_found"
        )
    current = await app_client.get("/avatars/me", headers=user.headers)
    assert current.json()["version"] == 2


async def test_bad_versions_are_4xx_and_change_nothing(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    for version in ("abc", "0", "-1", "1.5", "1e3", "0x1", str(2**53 + 1), "9" * 40, "%00", "%20"):
        assert_error(await restore(app_client, user, version), 422, "validation_failed")
    long_if_match = '"1"' + " " * 1030
    assert_error(await restore(app_client, user, 1, if_match=long_if_match), 422, "validation_failed")
    assert (await app_client.get("/avatars/me/restore/1", headers=user.headers)).status_code == 405
    current = await app_client.get("/avatars/me", headers=user.headers)
    assert current.json()["version"] == 1


async def test_another_users_history_is_invisible_through_the_api(
    app_client: httpx.AsyncClient, user: User, other_user: User
) -> None:
    await create_avatar(app_client, user, name="Mine", personality="friendly")
    for value in ("witty", "caring", "playful"):
        await persona(app_client, user, value)
    await create_avatar(app_client, other_user, name="Theirs", personality="professional")

    assert await all_versions(app_client, other_user) == [(1, "Theirs", "professional", "A test avatar.")]
    _, cursor = await history_page(app_client, user, limit=1)
    assert cursor == "4"
    # A cursor is only a version number: with the victim's, the other user reads their own.
    items, _ = await history_page(app_client, other_user, cursor=cursor)
    assert [(v["version"], v["name"]) for v in items] == [(1, "Theirs")]
    # The victim has versions 1-4; to the other user only their own version 1 exists.
    for version in (2, 3, 4):
        assert_error(await restore(app_client, other_user, version), 404, "avatar_version_not_found")
    assert (await restore(app_client, other_user, 1)).json()["name"] == "Theirs"
    mine = await app_client.get("/avatars/me", headers=user.headers)
    assert (mine.json()["name"], mine.json()["version"]) == ("Mine", 4)
    assert len(await all_versions(app_client, user)) == 4


async def test_history_in_sql_as_the_data_api_runs_it(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    """G5: other users' claims read nothing, anon reads nothing, and nobody writes history
    through the API roles, not even their own."""
    avatar_id = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, 'Ava') returning id", user.id
    )
    await owner.execute("update public.avatars set personality = 'witty' where id = $1", avatar_id)
    async with as_role(conn, "authenticated", claims_of(user)):
        rows = await conn.fetch("select version from public.avatar_history order by version")
        assert [r["version"] for r in rows] == [1, 2]
    async with as_role(conn, "authenticated", claims_of(other_user)):
        assert await conn.fetch("select * from public.avatar_history") == []
        assert await conn.fetch("select * from public.avatar_history where avatar_id = $1", avatar_id) == []
    writes: list[tuple[str, tuple[object, ...]]] = [
        (
            "insert into public.avatar_history"
            " (avatar_id, user_id, version, name, personality, backstory)"
            " values ($1, $2, 9, 'x', 'witty', '')",
            (avatar_id, user.id),
        ),
        ("update public.avatar_history set name = 'x' where avatar_id = $1", (avatar_id,)),
        ("delete from public.avatar_history where avatar_id = $1", (avatar_id,)),
        ("truncate public.avatar_history", ()),
    ]
    for claims_owner in (user, other_user):
        for sql, args in writes:
            async with as_role(conn, "authenticated", claims_of(claims_owner)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql, *args)
    for sql, args in [("select * from public.avatar_history", ()), *writes]:
        async with as_role(conn, "anon"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql, *args)
    for role in ("anon", "authenticated"):
        async with as_role(conn, role, claims_of(user)):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("select * from avatar_chat.restore_my_avatar('{}', 1, null)")
    # Through the Data API a user still changes their own avatar: that is recorded too.
    async with as_role(conn, "authenticated", claims_of(user)):
        await conn.execute("update public.avatars set name = 'Self' where id = $1", avatar_id)
        rows = await conn.fetch("select version, name from public.avatar_history order by version")
        assert [(r["version"], r["name"]) for r in rows] == [(1, "Ava"), (2, "Ava"), (3, "Self")]
    rows = await owner.fetch(
        "select version, name from public.avatar_history where avatar_id = $1 order by version", avatar_id
    )
    assert [(r["version"], r["name"]) for r in rows] == [(1, "Ava"), (2, "Ava")]


async def test_history_follows_the_avatar_to_a_new_owner(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    avatar_id = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, 'Ava') returning id", user.id
    )
    await owner.execute("update public.avatars set user_id = $2 where id = $1", avatar_id, other_user.id)
    async with as_role(conn, "authenticated", claims_of(user)):
        assert await conn.fetch("select * from public.avatar_history") == []
    async with as_role(conn, "authenticated", claims_of(other_user)):
        rows = await conn.fetch("select version, user_id from public.avatar_history order by version")
        assert [(r["version"], r["user_id"]) for r in rows] == [(1, other_user.id), (2, other_user.id)]


async def test_deleting_the_user_deletes_the_history(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User
) -> None:
    await create_avatar(app_client, user)
    await persona(app_client, user, "witty")
    await owner.execute("delete from auth.users where id = $1", user.id)
    assert await owner.fetchval("select count(*) from public.avatar_history where user_id = $1", user.id) == 0


async def test_the_migration_back_fills_existing_avatars(database_url: str, tmp_path: Path) -> None:
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(default_migrations_dir().glob("*.sql")):
        if path.name < HISTORY_MIGRATION:
            shutil.copy(path, earlier / path.name)
    async with fresh_database(database_url) as dsn:
        await migrate(dsn, earlier)
        conn = await asyncpg.connect(dsn)
        try:
            user = await create_user(conn)
            avatar_id = await conn.fetchval(
                "insert into public.avatars (user_id, name) values ($1, 'Ava') returning id", user.id
            )
            await conn.execute("update public.avatars set personality = 'witty' where id = $1", avatar_id)
            await migrate(dsn)
            rows = await conn.fetch(
                "select h.avatar_id, h.user_id, h.version, h.personality::text as personality,"
                " h.changed_at = a.updated_at as same_time"
                " from public.avatar_history h join public.avatars a on a.id = h.avatar_id"
            )
            assert [tuple(r.values()) for r in rows] == [(avatar_id, user.id, 2, "witty", True)]
            # From here on every change is recorded.
            await conn.execute("update public.avatars set personality = 'caring' where id = $1", avatar_id)
            versions = await conn.fetch("select version from public.avatar_history order by version")
            assert [r["version"] for r in versions] == [2, 3]
        finally:
            await conn.close()
