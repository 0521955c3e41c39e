"""Row level security, in SQL, as Supabase's Data API would run each statement."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from tests.factories import User
from tests.helpers import as_role, claims_of


async def insert_avatar_as_owner(owner: asyncpg.Connection, user: User, name: str = "Ava") -> uuid.UUID:
    avatar_id: uuid.UUID = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, $2) returning id", user.id, name
    )
    return avatar_id


async def test_other_users_avatar_is_invisible_and_untouchable(
    owner: asyncpg.Connection, database_url: str, user: User, other_user: User
) -> None:
    avatar_id = await insert_avatar_as_owner(owner, user)
    conn = await asyncpg.connect(database_url)
    try:
        async with as_role(conn, "authenticated", claims_of(other_user)):
            assert await conn.fetch("select * from public.avatars") == []
            assert await conn.fetch("select * from public.avatars where id = $1", avatar_id) == []
            assert (
                await conn.execute("update public.avatars set name = 'pwned' where id = $1", avatar_id)
                == "UPDATE 0"
            )
            assert await conn.execute("delete from public.avatars where id = $1", avatar_id) == "DELETE 0"
        async with as_role(conn, "authenticated", claims_of(other_user)):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("insert into public.avatars (user_id, name) values ($1, 'fake')", user.id)
        # Column grants: nobody rewrites version or ownership through the Data API.
        for statement in ("update public.avatars set version = 99", "update public.avatars set user_id = $1"):
            async with as_role(conn, "authenticated", claims_of(other_user)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement, *([user.id] if "$1" in statement else []))
        async with as_role(conn, "authenticated", claims_of(user)):
            rows = await conn.fetch("select id from public.avatars")
            assert [r["id"] for r in rows] == [avatar_id]
    finally:
        await conn.close()
    row = await owner.fetchrow("select name, version from public.avatars where id = $1", avatar_id)
    assert row is not None and (row["name"], row["version"]) == ("Ava", 1)


async def test_anon_sees_and_changes_nothing(
    owner: asyncpg.Connection, database_url: str, user: User
) -> None:
    avatar_id = await insert_avatar_as_owner(owner, user)
    conn = await asyncpg.connect(database_url)
    try:
        for statement, args in (
            ("select * from public.avatars", ()),
            ("update public.avatars set name = 'x' where id = $1", (avatar_id,)),
            ("delete from public.avatars where id = $1", (avatar_id,)),
            ("insert into public.avatars (user_id, name) values ($1, 'x')", (user.id,)),
        ):
            async with as_role(conn, "anon"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement, *args)
    finally:
        await conn.close()
    assert await owner.fetchval("select version from public.avatars where id = $1", avatar_id) == 1


async def test_the_private_functions_are_not_callable_by_api_roles(database_url: str, user: User) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for role in ("anon", "authenticated"):
            async with as_role(conn, role, claims_of(user)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("select * from avatar_chat.update_my_avatar('{}', '{}', null)")
    finally:
        await conn.close()


async def test_dashboard_update_bumps_version_and_notifies(
    owner: asyncpg.Connection, database_url: str, user: User
) -> None:
    listener = await asyncpg.connect(database_url)
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
        received.put_nowait(json.loads(str(payload)))

    await listener.add_listener("avatar_chat", on_notify)
    try:
        avatar_id = await insert_avatar_as_owner(owner, user)
        inserted = await asyncio.wait_for(_next_for(received, user), 5)
        assert (inserted["op"], inserted["version"], inserted["id"]) == (
            "insert",
            1,
            str(avatar_id),
        )

        # What the table editor runs; even a hand-written version is overridden.
        await owner.execute(
            "update public.avatars set personality = 'witty', version = 42 where id = $1", avatar_id
        )
        row = await owner.fetchrow(
            "select personality::text as p, version from public.avatars where id = $1", avatar_id
        )
        assert row is not None and (row["p"], row["version"]) == ("witty", 2)
        updated = await asyncio.wait_for(_next_for(received, user), 5)
        assert (updated["op"], updated["version"], updated["user_id"]) == (
            "update",
            2,
            str(user.id),
        )

        await owner.execute("delete from public.avatars where id = $1", avatar_id)
        deleted = await asyncio.wait_for(_next_for(received, user), 5)
        assert deleted["op"] == "delete"
    finally:
        await listener.close()


async def _next_for(queue: asyncio.Queue[dict[str, object]], user: User) -> dict[str, object]:
    while True:
        event = await queue.get()
        if event.get("user_id") == str(user.id):
            return event


async def test_rolled_back_update_does_not_notify(
    owner: asyncpg.Connection, database_url: str, user: User
) -> None:
    avatar_id = await insert_avatar_as_owner(owner, user)
    listener = await asyncpg.connect(database_url)
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await listener.add_listener("avatar_chat", lambda *a: received.put_nowait(json.loads(a[3])))
    try:
        tx = owner.transaction()
        await tx.start()
        await owner.execute("update public.avatars set name = 'Never' where id = $1", avatar_id)
        await tx.rollback()
        await owner.execute("update public.avatars set name = 'Kept' where id = $1", avatar_id)
        event = await asyncio.wait_for(_next_for(received, user), 5)
        assert event["version"] == 2  # the rolled-back update neither notified nor took a version
    finally:
        await listener.close()
