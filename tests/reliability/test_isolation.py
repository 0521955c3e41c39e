"""G5 in SQL, as Supabase's Data API runs each request: another user's claims and the anon
role see nothing and change nothing in any table, and a row of one user never names, waits
for or finds out about a row of another's. (Through this API, see
tests/conversations/test_api.py: other users' ids are 404 on every route, answered as ids
that do not exist.)"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from avatar_chat.ops.migrate import default_migrations_dir, migrate
from tests.support.databases import as_role, claims_of, fresh_database
from tests.support.factories import User, away_from_minute_boundary, create_user


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
    # Set by the operator (docs/safety.md#minors); users read their own row only.
    await owner.execute("insert into public.user_safety (user_id, minor) values ($1, true)", user.id)
    # Likewise the user's plan (docs/usage.md), and what their model calls cost.
    await owner.execute("select avatar_chat.configure_default_plan('free')")
    await owner.execute("insert into public.user_plans (user_id, plan) values ($1, 'free')", user.id)
    await owner.execute(
        "insert into public.usage_records (user_id, kind, model, prompt_tokens, completion_tokens, source)"
        " values ($1, 'reply', 'm', 10, 5, 'provider')",
        user.id,
    )
    # avatar_history: its row for version 1 was written by trigger, keyed by the avatar's id.
    # conversation_summaries is keyed by its conversation's id; user_safety by its user's.
    return {
        "avatars": avatar,
        "avatar_history": avatar,
        "conversations": conversation,
        "messages": message,
        "conversation_summaries": conversation,
        "user_safety": user.id,
        "user_plans": user.id,
        "usage_records": user.id,
    }


def history_writes(victim: User, ids: dict[str, uuid.UUID]) -> list[tuple[str, tuple[object, ...]]]:
    """History is written by trigger only: no API role may change it, not even its owner's."""
    return [
        ("update public.avatar_history set name = 'x' where avatar_id = $1", (ids["avatar_history"],)),
        ("delete from public.avatar_history where avatar_id = $1", (ids["avatar_history"],)),
        ("truncate public.avatar_history", ()),
        # Nor may anyone mark or unmark a minor through the Data API, themselves included.
        ("update public.user_safety set minor = false where user_id = $1", (ids["user_safety"],)),
        ("delete from public.user_safety where user_id = $1", (ids["user_safety"],)),
        ("insert into public.user_safety (user_id, minor) values ($1, false)", (victim.id,)),
        # Nor choose their plan, nor write what they spent.
        ("update public.user_plans set plan = null where user_id = $1", (ids["user_plans"],)),
        ("delete from public.user_plans where user_id = $1", (ids["user_plans"],)),
        ("insert into public.user_plans (user_id) values ($1)", (victim.id,)),
        ("update public.usage_records set prompt_tokens = 0 where user_id = $1", (ids["usage_records"],)),
        ("delete from public.usage_records where user_id = $1", (ids["usage_records"],)),
        (
            "insert into public.usage_records"
            " (user_id, kind, model, prompt_tokens, completion_tokens, source)"
            " values ($1, 'reply', 'm', 0, 0, 'provider')",
            (victim.id,),
        ),
        ("update public.plans set messages_per_day = null", ()),
        ("delete from public.plans", ()),
        ("insert into public.plans (name) values ('mine')", ()),
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
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    ids = await seed(owner, user)
    for table in ids:
        async with as_role(conn, "authenticated", claims_of(other_user)):
            assert await conn.fetch(f"select * from public.{table}") == [], table
    async with as_role(conn, "authenticated", claims_of(user)):  # their own: read only
        assert await conn.fetchval("select minor from public.user_safety") is True
        assert await conn.fetchval("select plan from public.user_plans") == "free"
        assert await conn.fetchval("select prompt_tokens from public.usage_records") == 10
    for claims_owner in (user, other_user):  # the plans themselves: anyone signed in reads them
        async with as_role(conn, "authenticated", claims_of(claims_owner)):
            assert await conn.fetchval("select count(*) from public.plans where name = 'free'") == 1
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
    await assert_untouched(owner, user, ids)


async def test_anon_sees_and_changes_nothing(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User
) -> None:
    ids = await seed(owner, user)
    for sql, args in (
        [(f"select * from public.{t}", ()) for t in ids]
        + statements(user, ids)
        + inserts(user, ids)
        + history_writes(user, ids)
    ):
        async with as_role(conn, "anon"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql, *args)
    await assert_untouched(owner, user, ids)


async def create_conversation_as_owner(owner: asyncpg.Connection, user: User) -> uuid.UUID:
    conversation: uuid.UUID = await owner.fetchval(
        "insert into public.conversations (user_id) values ($1) returning id", user.id
    )
    return conversation


async def create_message_as_owner(
    owner: asyncpg.Connection,
    conversation: uuid.UUID,
    user: User,
    content: str,
    *,
    reply_to: uuid.UUID | None = None,
) -> uuid.UUID:
    message: uuid.UUID = await owner.fetchval(
        "insert into public.messages (conversation_id, user_id, role, content, reply_to)"
        " values ($1, $2, case when $4::uuid is null then 'user' else 'assistant' end::public.message_role,"
        " $3, $4) returning id",
        conversation,
        user.id,
        content,
        reply_to,
    )
    return message


async def refusal(conn: asyncpg.Connection, user: User, sql: str, *args: object) -> dict[str, str]:
    """Everything Postgres tells a client about a statement run with this user's claims that
    it refused (SQLSTATE, message, detail, hint, constraint, context...)."""
    async with as_role(conn, "authenticated", claims_of(user)):
        with pytest.raises(asyncpg.PostgresError) as refused:
            await conn.execute(sql, *args)
    answer: dict[str, str] = refused.value.as_dict()
    return answer


RLS_REFUSAL = {
    "sqlstate": "42501",
    "message": 'new row violates row-level security policy for table "messages"',
}


async def test_a_reply_never_names_another_users_message(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    """reply_to names only a message of one's own in the same conversation. Another user's
    message, with or without a current reply, as the current reply or not, answers exactly
    as an id that does not exist: neither its existence nor its current-reply slot shows
    (the unique index of current replies and the foreign key never speak), and no slot of
    theirs can be taken."""
    theirs = await create_conversation_as_owner(owner, user)
    answered = await create_message_as_owner(owner, theirs, user, "answered")
    await create_message_as_owner(owner, theirs, user, "their reply", reply_to=answered)
    unanswered = await create_message_as_owner(owner, theirs, user, "unanswered")
    mine = await create_conversation_as_owner(owner, other_user)
    my_message = await create_message_as_owner(owner, mine, other_user, "mine")
    elsewhere = await create_conversation_as_owner(owner, other_user)
    my_message_elsewhere = await create_message_as_owner(owner, elsewhere, other_user, "mine, elsewhere")
    sql = (
        "insert into public.messages (conversation_id, role, content, reply_to, is_current)"
        " values ($1, 'assistant', 'x', $2, $3)"
    )
    nowhere = await refusal(conn, other_user, sql, mine, uuid.uuid4(), True)
    assert {k: nowhere[k] for k in RLS_REFUSAL} == RLS_REFUSAL, nowhere
    for target in (answered, unanswered, my_message_elsewhere):
        for is_current in (True, False):
            answer = await refusal(conn, other_user, sql, mine, target, is_current)
            assert answer == nowhere, (target, is_current)
    # A reply to a message of one's own in the same conversation is written as ever.
    for is_current in (True, False):
        async with as_role(conn, "authenticated", claims_of(other_user)):
            assert await conn.execute(sql, mine, my_message, is_current) == "INSERT 0 1"
    replies = await owner.fetch(
        "select user_id, content from public.messages where reply_to = any($1::uuid[])",
        [answered, unanswered],
    )
    assert [(r["user_id"], r["content"]) for r in replies] == [(user.id, "their reply")]


async def test_another_users_conversation_answers_as_one_that_does_not_exist(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    """A message into someone else's conversation, or naming someone else as its user, is
    refused exactly as one into a conversation that does not exist (the seq trigger runs
    before RLS and used to tell the two apart), and bumps nothing of theirs."""
    theirs = await create_conversation_as_owner(owner, user)
    await create_message_as_owner(owner, theirs, user, "theirs")
    mine = await create_conversation_as_owner(owner, other_user)
    before = await owner.fetchrow(
        "select last_seq, updated_at from public.conversations where id = $1", theirs
    )
    sql = "insert into public.messages (conversation_id, user_id, content) values ($1, $2, 'x')"
    nowhere = await refusal(conn, other_user, sql, uuid.uuid4(), other_user.id)
    assert {k: nowhere[k] for k in RLS_REFUSAL} == RLS_REFUSAL, nowhere
    for conversation, named in (
        (theirs, other_user.id),
        (theirs, user.id),
        (mine, user.id),
        (uuid.uuid4(), user.id),
    ):
        answer = await refusal(conn, other_user, sql, conversation, named)
        assert answer == nowhere, (conversation == theirs, named == user.id)
    after = await owner.fetchrow(
        "select last_seq, updated_at from public.conversations where id = $1", theirs
    )
    assert after == before
    # Where RLS does not apply (the dashboard, service_role), a missing conversation is
    # still named as such.
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="conversation does not exist"):
        await owner.execute(sql, uuid.uuid4(), user.id)


async def test_every_insert_naming_another_users_rows_answers_as_for_rows_that_do_not_exist(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    """The other tables an API role may insert into: naming another user, their
    conversation or their summary's key answers exactly as naming ids that do not exist
    (RLS speaks before the unique and foreign keys, also with ON CONFLICT)."""
    ids = await seed(owner, user)
    summary = (
        "insert into public.conversation_summaries"
        " (conversation_id, user_id, covers_upto_seq, revision, content) values ($1, $2, 1, 0, 'x')"
    )
    cases: list[tuple[str, tuple[object, ...], tuple[object, ...]]] = [
        ("insert into public.avatars (user_id, name) values ($1, 'x')", (user.id,), (uuid.uuid4(),)),
        (
            "insert into public.avatars (user_id, name) values ($1, 'x')"
            " on conflict (user_id) do update set name = 'y'",
            (user.id,),
            (uuid.uuid4(),),
        ),
        ("insert into public.conversations (user_id) values ($1)", (user.id,), (uuid.uuid4(),)),
        (summary, (ids["conversations"], other_user.id), (uuid.uuid4(), other_user.id)),
        (summary, (ids["conversations"], user.id), (uuid.uuid4(), uuid.uuid4())),
        (
            summary + " on conflict (conversation_id) do update set content = 'y'",
            (ids["conversations"], other_user.id),
            (uuid.uuid4(), other_user.id),
        ),
    ]
    for sql, theirs, nowhere in cases:
        answer = await refusal(conn, other_user, sql, *theirs)
        assert answer["sqlstate"] == "42501", (sql, answer)
        assert answer == await refusal(conn, other_user, sql, *nowhere), sql
    await assert_untouched(owner, user, ids)


async def test_a_refused_insert_never_waits_for_another_users_rows(
    owner: asyncpg.Connection, database_url: str, user: User, other_user: User
) -> None:
    """While a transaction of theirs holds their conversation and their message (as a chat
    turn does), another user's inserts naming them are refused at once: nothing of theirs
    is locked on the way, so nobody can stall their sends or time them."""
    theirs = await create_conversation_as_owner(owner, user)
    their_message = await create_message_as_owner(owner, theirs, user, "theirs")
    mine = await create_conversation_as_owner(owner, other_user)
    holder = await asyncpg.connect(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("select from public.conversations where id = $1 for update", theirs)
            await holder.execute("select from public.messages where id = $1 for update", their_message)
            for sql, args in (
                ("insert into public.messages (conversation_id, content) values ($1, 'x')", (theirs,)),
                (
                    "insert into public.messages (conversation_id, user_id, content) values ($1, $2, 'x')",
                    (theirs, user.id),
                ),
                (
                    "insert into public.messages (conversation_id, role, content, reply_to)"
                    " values ($1, 'assistant', 'x', $2)",
                    (mine, their_message),
                ),
                (
                    "insert into public.conversation_summaries (conversation_id, covers_upto_seq, revision,"
                    " content) values ($1, 1, 0, 'x')",
                    (theirs,),
                ),
            ):
                async with as_role(conn, "authenticated", claims_of(other_user)):
                    await conn.execute("set local lock_timeout = '1s'")
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql, *args)
    finally:
        await conn.close()
        await holder.close()


@pytest.fixture
async def limits(owner: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    yield owner
    await owner.execute("select avatar_chat.configure_limits(0, 0)")


async def test_a_row_naming_another_user_counts_nothing_for_them(
    owner: asyncpg.Connection, database_url: str, user: User, other_user: User, limits: asyncpg.Connection
) -> None:
    """The send limit (a trigger that runs before RLS) is never applied to a row that RLS
    refuses: a row naming someone else neither tells whether they are over their limit nor
    waits for their counter."""
    mine = await create_conversation_as_owner(owner, other_user)
    quiet = await create_user(owner)
    await away_from_minute_boundary()
    await limits.execute("select avatar_chat.configure_limits(1, 0)")
    await owner.execute(
        "insert into avatar_chat.send_counters (user_id, window_start, sends)"
        " values ($1, date_trunc('minute', now()), 5)",
        user.id,
    )
    sql = "insert into public.messages (conversation_id, user_id, content) values ($1, $2, 'x')"
    holder = await asyncpg.connect(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        not_limited = await refusal(conn, other_user, sql, mine, quiet.id)
        assert {k: not_limited[k] for k in RLS_REFUSAL} == RLS_REFUSAL, not_limited
        assert await refusal(conn, other_user, sql, mine, user.id) == not_limited
        async with holder.transaction():
            await holder.execute(
                "select from avatar_chat.send_counters where user_id = $1 for update", user.id
            )
            async with as_role(conn, "authenticated", claims_of(other_user)):
                await conn.execute("set local lock_timeout = '1s'")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql, mine, user.id)
    finally:
        await conn.close()
        await holder.close()
    assert (
        await owner.fetchval("select sends from avatar_chat.send_counters where user_id = $1", user.id) == 5
    )


async def test_replies_made_through_the_hole_are_removed_by_its_migration(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows a user could write before 20261207100000_cross_user_references (a reply to
    another user's message, holding its current-reply slot, or to a message of another
    conversation) are gone after it, with their own replies; every other row stays."""
    fix = "20261207100000"
    for migration in sorted(default_migrations_dir().glob("*.sql")):
        if migration.name < fix:
            shutil.copy(migration, tmp_path)
    async with fresh_database(database_url) as dsn:
        await migrate(dsn, tmp_path)
        conn = await asyncpg.connect(dsn)
        try:
            a, b = await create_user(conn), await create_user(conn)
            theirs = await create_conversation_as_owner(conn, a)
            answered = await create_message_as_owner(conn, theirs, a, "answered")
            their_reply = await create_message_as_owner(conn, theirs, a, "their reply", reply_to=answered)
            unanswered = await create_message_as_owner(conn, theirs, a, "unanswered")
            mine = await create_conversation_as_owner(conn, b)
            my_message = await create_message_as_owner(conn, mine, b, "mine")
            my_reply = await create_message_as_owner(conn, mine, b, "my reply", reply_to=my_message)
            my_unanswered = await create_message_as_owner(conn, mine, b, "mine, unanswered")
            elsewhere = await create_conversation_as_owner(conn, b)
            # What the Data API let b write: the first takes a's free current-reply slot.
            squatter = await create_message_as_owner(conn, mine, b, "squat", reply_to=unanswered)
            await create_message_as_owner(conn, mine, b, "reply to the squatter", reply_to=squatter)
            await create_message_as_owner(conn, elsewhere, b, "across conversations", reply_to=my_unanswered)
            kept = {answered, their_reply, unanswered, my_message, my_reply, my_unanswered}

            shutil.copy(next(default_migrations_dir().glob(f"{fix}_*.sql")), tmp_path)
            with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
                assert await migrate(dsn, tmp_path) == [fix]
            left = {r["id"] for r in await conn.fetch("select id from public.messages")}
            assert left == kept
        finally:
            await conn.close()
    assert any(
        "removed 2 message(s) replying to a message of another user or conversation" in m
        for m in caplog.messages
    )


async def test_private_schema_is_closed_to_api_roles(conn: asyncpg.Connection, user: User) -> None:
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
            "select * from avatar_chat.choose_reply('{}', gen_random_uuid(), gen_random_uuid())",
            "select * from avatar_chat.safety_events",
            "select * from avatar_chat.safety_counts",
            "select * from avatar_chat.interactions",
            "select * from avatar_chat.usage_counters",
            "select * from avatar_chat.usage_by_day",
            "select * from avatar_chat.usage_by_model",
            "select * from avatar_chat.usage_by_plan",
            "select avatar_chat.my_usage('{}')",
            "select avatar_chat.record_usage(gen_random_uuid(), null, null, '[]', null)",
            "select * from avatar_chat.plan_of(gen_random_uuid(), null)",
            "select avatar_chat.configure_default_plan('x')",
            "select * from avatar_chat.exports",
            "select avatar_chat.begin_export('{}', null, 1, 0)",
            "select avatar_chat.end_export(gen_random_uuid(), gen_random_uuid())",
            "select * from avatar_chat.safety_report(2026)",
            "select avatar_chat.record_refusal('{}', gen_random_uuid(), gen_random_uuid(), 'x', '{}', '')",
            "select * from avatar_chat.workers",
            "select avatar_chat.worker_heartbeat(1, 5, 'h', 1)",
            "select * from avatar_chat.restore_my_avatar('{}', 1, null)",
            "select avatar_chat.is_my_message(gen_random_uuid(), gen_random_uuid())",
            "select * from supabase_migrations.schema_migrations",
        ):
            async with as_role(conn, role, claims_of(user)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)


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
        "user_safety",
        "plans",
        "user_plans",
        "usage_records",
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
    assert await owner.fetchval("select minor from public.user_safety where user_id = $1", user.id) is True
