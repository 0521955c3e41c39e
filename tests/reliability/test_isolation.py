"""G5 in SQL, as Supabase's Data API runs each request: another user's claims and the anon
role see nothing and change nothing in any table. (Through this API, see
tests/chat/test_conversations.py: other users' ids are 404 on every route.)"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.factories import User
from tests.helpers import as_role, claims_of


async def seed(owner: asyncpg.Connection, user: User) -> dict[str, uuid.UUID]:
    avatar = await owner.fetchval(
        "insert into public.avatars (user_id, name) values ($1, 'A') returning id", user.id
    )
    conversation = await owner.fetchval(
        "insert into public.conversations (user_id) values ($1) returning id", user.id
    )
    message = await owner.fetchval(
        "insert into public.messages (conversation_id, user_id, content)"
        " values ($1, $2, 'secret') returning id",
        conversation,
        user.id,
    )
    await owner.execute(
        "insert into public.conversation_summaries"
        " (conversation_id, user_id, covers_upto_seq, revision, content)"
        " values ($1, $2, 1, 0, 'secret summary')",
        conversation,
        user.id,
    )
    # avatar_history: its row for version 1 was written by trigger, keyed by the avatar's id.
    # conversation_summaries is keyed by its conversation's id.
    return {
        "avatars": avatar,
        "avatar_history": avatar,
        "conversations": conversation,
        "messages": message,
        "conversation_summaries": conversation,
    }


def history_writes(victim: User, ids: dict[str, uuid.UUID]) -> list[tuple[str, tuple[object, ...]]]:
    """History is written by trigger only: no API role may change it, not even its owner's."""
    return [
        ("update public.avatar_history set name = 'x' where avatar_id = $1", (ids["avatar_history"],)),
        ("delete from public.avatar_history where avatar_id = $1", (ids["avatar_history"],)),
        ("truncate public.avatar_history", ()),
    ]


def statements(victim: User, ids: dict[str, uuid.UUID]) -> list[tuple[str, tuple[object, ...]]]:
    return [
        ("update public.avatars set name = 'x' where id = $1", (ids["avatars"],)),
        ("delete from public.avatars where id = $1", (ids["avatars"],)),
        ("update public.conversations set title = 'x' where id = $1", (ids["conversations"],)),
        ("delete from public.conversations where id = $1", (ids["conversations"],)),
        ("delete from public.messages where id = $1", (ids["messages"],)),
        (
            "update public.conversation_summaries set content = 'x' where conversation_id = $1",
            (ids["conversation_summaries"],),
        ),
        (
            "delete from public.conversation_summaries where conversation_id = $1",
            (ids["conversation_summaries"],),
        ),
    ]


def inserts(victim: User, ids: dict[str, uuid.UUID]) -> list[tuple[str, tuple[object, ...]]]:
    return [
        ("insert into public.avatars (user_id, name) values ($1, 'x')", (victim.id,)),
        (
            "insert into public.avatar_history (avatar_id, user_id, version, name, personality, backstory)"
            " values ($1, $2, 2, 'x', 'witty', '')",
            (ids["avatar_history"], victim.id),
        ),
        ("insert into public.conversations (user_id) values ($1)", (victim.id,)),
        (
            "insert into public.messages (conversation_id, user_id, content) values ($1, $2, 'x')",
            (ids["conversations"], victim.id),
        ),
        (
            "insert into public.conversation_summaries (conversation_id, user_id, covers_upto_seq, revision,"
            " content) values ($1, $2, 1, 0, 'x') on conflict do nothing",
            (ids["conversation_summaries"], victim.id),
        ),
    ]


async def test_another_users_claims_see_and_change_nothing(
    owner: asyncpg.Connection, database_url: str, user: User, other_user: User
) -> None:
    ids = await seed(owner, user)
    conn = await asyncpg.connect(database_url)
    try:
        for table in ids:
            async with as_role(conn, "authenticated", claims_of(other_user)):
                assert await conn.fetch(f"select * from public.{table}") == [], table
        for sql, args in statements(user, ids):
            async with as_role(conn, "authenticated", claims_of(other_user)):
                status = await conn.execute(sql, *args)
                assert status.endswith(" 0"), (sql, status)
        for sql, args in inserts(user, ids):
            async with as_role(conn, "authenticated", claims_of(other_user)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql, *args)
        for claims_owner in (other_user, user):
            for sql, args in history_writes(user, ids):
                async with as_role(conn, "authenticated", claims_of(claims_owner)):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql, *args)
        # Writing into the victim's conversation under one's own name is refused too.
        async with as_role(conn, "authenticated", claims_of(other_user)):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "insert into public.messages (conversation_id, user_id, content) values ($1, $2, 'x')",
                    ids["conversations"],
                    other_user.id,
                )
    finally:
        await conn.close()
    await assert_untouched(owner, user, ids)


async def test_anon_sees_and_changes_nothing(
    owner: asyncpg.Connection, database_url: str, user: User
) -> None:
    ids = await seed(owner, user)
    conn = await asyncpg.connect(database_url)
    try:
        for sql, args in (
            [(f"select * from public.{t}", ()) for t in ids]
            + statements(user, ids)
            + inserts(user, ids)
            + history_writes(user, ids)
        ):
            async with as_role(conn, "anon"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql, *args)
    finally:
        await conn.close()
    await assert_untouched(owner, user, ids)


async def test_private_schema_is_closed_to_api_roles(database_url: str, user: User) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for role in ("anon", "authenticated"):
            for sql in (
                "select * from avatar_chat.limits",
                "select * from avatar_chat.send_counters",
                "select avatar_chat.configure_limits(0, 0)",
                "select * from avatar_chat.begin_turn("
                "'{}', gen_random_uuid(), 'x', null, 1, null, null, null, null, null, 20, null)",
                "select avatar_chat.save_summary('{}', gen_random_uuid(), 1, 0, 'x')",
                "select avatar_chat.save_partial('{}', gen_random_uuid(), 1, 'x', 1)",
                "select avatar_chat.request_stop('{}', gen_random_uuid(), gen_random_uuid())",
                "select * from avatar_chat.reply_progress('{}', gen_random_uuid(), gen_random_uuid(), 0)",
                "select avatar_chat.delete_message('{}', gen_random_uuid(), gen_random_uuid())",
                "select * from avatar_chat.workers",
                "select avatar_chat.worker_heartbeat(1, 5, 'h', 1)",
                "select * from avatar_chat.restore_my_avatar('{}', 1, null)",
                "select * from supabase_migrations.schema_migrations",
            ):
                async with as_role(conn, role, claims_of(user)):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql)
    finally:
        await conn.close()


async def test_every_public_table_is_covered_here(owner: asyncpg.Connection) -> None:
    tables = {
        r["relname"]
        for r in await owner.fetch(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'r'"
        )
    }
    assert tables == {
        "avatars",
        "avatar_history",
        "conversations",
        "messages",
        "conversation_summaries",
    }, "add new tables to this module"


async def assert_untouched(owner: asyncpg.Connection, user: User, ids: dict[str, uuid.UUID]) -> None:
    assert await owner.fetchval("select name from public.avatars where id = $1", ids["avatars"]) == "A"
    history = await owner.fetch(
        "select version, name from public.avatar_history where avatar_id = $1", ids["avatar_history"]
    )
    assert [(r["version"], r["name"]) for r in history] == [(1, "A")]
    assert (
        await owner.fetchval("select title from public.conversations where id = $1", ids["conversations"])
        is None
    )
    assert await owner.fetchval("select count(*) from public.messages where user_id = $1", user.id) == 1
    assert await owner.fetchval("select count(*) from public.conversations where user_id = $1", user.id) == 1
    assert (
        await owner.fetchval(
            "select content from public.conversation_summaries where conversation_id = $1",
            ids["conversation_summaries"],
        )
        == "secret summary"
    )
