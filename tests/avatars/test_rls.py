"""Row level security, in SQL, as Supabase's Data API would run each statement."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.support.databases import as_role, claims_of
from tests.support.factories import User


async def insert_avatar_as_owner(owner: asyncpg.Connection, user: User, name: str = "Ava") -> uuid.UUID:
    avatar_id: uuid.UUID = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, $2) returning id", user.id, name
    )
    return avatar_id


async def test_other_users_avatar_is_invisible_and_untouchable(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    avatar_id = await insert_avatar_as_owner(owner, user)
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
    row = await owner.fetchrow("select name, version from public.avatars where id = $1", avatar_id)
    assert row is not None and (row["name"], row["version"]) == ("Ava", 1)


async def test_anon_sees_and_changes_nothing(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User
) -> None:
    avatar_id = await insert_avatar_as_owner(owner, user)
    for statement, args in (
        ("select * from public.avatars", ()),
        ("update public.avatars set name = 'x' where id = $1", (avatar_id,)),
        ("delete from public.avatars where id = $1", (avatar_id,)),
        ("insert into public.avatars (user_id, name) values ($1, 'x')", (user.id,)),
    ):
        async with as_role(conn, "anon"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement, *args)
    assert await owner.fetchval("select version from public.avatars where id = $1", avatar_id) == 1


async def test_the_private_functions_are_not_callable_by_api_roles(
    conn: asyncpg.Connection, user: User
) -> None:
    for role in ("anon", "authenticated"):
        async with as_role(conn, role, claims_of(user)):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("select * from avatar_chat.update_my_avatar('{}', '{}', null)")


async def test_dashboard_update_bumps_version_and_notifies_nobody(
    owner: asyncpg.Connection, database_url: str, user: User
) -> None:
    """Every writer's change bumps the version (what chat turns compare); nothing is
    NOTIFYed (a notifying commit takes an instance-wide lock)."""
    listener = await asyncpg.connect(database_url)
    received: list[object] = []
    await listener.add_listener("avatar_chat", lambda *args: received.append(args[3]))
    try:
        avatar_id = await insert_avatar_as_owner(owner, user)
        # What the table editor runs; even a hand-written version is overridden.
        await owner.execute(
            "update public.avatars set personality = 'witty', version = 42 where id = $1", avatar_id
        )
        row = await owner.fetchrow(
            "select personality::text as p, version from public.avatars where id = $1", avatar_id
        )
        assert row is not None and (row["p"], row["version"]) == ("witty", 2)
        await owner.execute("delete from public.avatars where id = $1", avatar_id)
        await asyncio.sleep(0.3)  # a notification would have arrived by now
        assert received == []
    finally:
        await listener.close()


async def test_rolled_back_update_takes_no_version(owner: asyncpg.Connection, user: User) -> None:
    avatar_id = await insert_avatar_as_owner(owner, user)
    tx = owner.transaction()
    await tx.start()
    await owner.execute("update public.avatars set name = 'Never' where id = $1", avatar_id)
    await tx.rollback()
    await owner.execute("update public.avatars set name = 'Kept' where id = $1", avatar_id)
    assert await owner.fetchval("select version from public.avatars where id = $1", avatar_id) == 2


async def test_no_function_notifies(owner: asyncpg.Connection) -> None:
    """No NOTIFY on any write path: no function or trigger of ours sends one."""
    notifying = await owner.fetch(
        "select n.nspname || '.' || p.proname as name from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'avatar_chat')"
        " and (p.prosrc ilike '%pg_notify%' or p.prosrc ~* '\\mnotify\\s')"
    )
    assert [r["name"] for r in notifying] == []
