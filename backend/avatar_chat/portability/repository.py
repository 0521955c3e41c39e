"""The SQL of an export: the lease (avatar_chat.begin_export / end_export), then every read
in one read-only repeatable-read transaction as the user (RLS decides what it holds), in
pages by key so that no page and no query holds more than `limit` rows.

Each row comes back as its file's JSON text, built by Postgres (json_build_object): the
worker writes it into the archive as it is, never building objects of its own."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Connection, Database

_USAGE = (
    "'kind', u.kind, 'model', u.model, 'plan', u.plan, 'calls', u.calls, 'prompt_tokens', u.prompt_tokens,"
    " 'completion_tokens', u.completion_tokens, 'source', u.source, 'status', u.status,"
    " 'created_at', u.created_at"
)


async def begin_export(
    db: Database, user: Claims, *, worker_id: int | None, lease_s: float, per_day: int
) -> uuid.UUID:
    row = await db.call_as(
        user, "select avatar_chat.begin_export($1, $2, $3, $4) as token", worker_id, lease_s, per_day
    )
    assert row is not None
    token: uuid.UUID = row["token"]
    return token


async def end_export(db: Database, *, user_id: uuid.UUID, token: uuid.UUID) -> None:
    async with db.connection() as conn:
        await conn.execute("select avatar_chat.end_export($1, $2)", user_id, token)


async def avatar(conn: Connection) -> tuple[str, str | None] | None:
    """avatar.json without its history (its text ends before `"history"`), and the image's folder."""
    row = await conn.fetchrow(
        "select json_build_object('id', a.id, 'name', a.name, 'personality', a.personality,"
        " 'backstory', a.backstory, 'version', a.version, 'created_at', a.created_at,"
        " 'updated_at', a.updated_at, 'card', a.card)::text as head, a.image_path from public.avatars a"
    )
    return None if row is None else (row["head"], row["image_path"])


async def avatar_history(conn: Connection, *, after: int, limit: int) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "select h.version, json_build_object('version', h.version, 'name', h.name,"
        " 'personality', h.personality, 'backstory', h.backstory, 'changed_at', h.changed_at)::text as entry"
        " from public.avatar_history h where h.version > $1 order by h.version limit $2",
        after,
        limit,
    )
    return [(r["version"], r["entry"]) for r in rows]


async def conversations(
    conn: Connection, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[tuple[datetime, uuid.UUID, str]]:
    """Conversations in creation order, each as its file's head: every field but `messages`."""
    rows = await conn.fetch(
        "select c.created_at, c.id, json_build_object('id', c.id, 'title', c.title, 'mode', c.mode,"
        " 'created_at', c.created_at, 'updated_at', c.updated_at, 'summary',"
        " (select json_build_object('covers_upto_seq', s.covers_upto_seq, 'content', s.content,"
        "   'updated_at', s.updated_at) from public.conversation_summaries s where s.conversation_id = c.id)"
        ")::text as head from public.conversations c"
        " where $1::timestamptz is null or (c.created_at, c.id) > ($1, $2)"
        " order by c.created_at, c.id limit $3",
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
    )
    return [(r["created_at"], r["id"], r["head"]) for r in rows]


async def messages(
    conn: Connection, conversation_id: uuid.UUID, *, after: int, limit: int
) -> list[tuple[int, str]]:
    """A conversation's messages after seq `after`, each with what it cost."""
    rows = await conn.fetch(
        "select m.seq, json_build_object('id', m.id, 'seq', m.seq, 'role', m.role, 'content', m.content,"
        " 'status', m.status, 'reply_to', m.reply_to, 'variant', m.variant, 'is_current', m.is_current,"
        " 'persona_version', m.persona_version, 'personality', m.personality, 'notice_kind', m.notice_kind,"
        " 'error_code', m.error_code, 'attempt', m.attempt, 'created_at', m.created_at,"
        " 'updated_at', m.updated_at, 'usage', coalesce("
        f"   (select json_agg(json_build_object({_USAGE}) order by u.id) from public.usage_records u"
        "     where u.conversation_id = m.conversation_id and u.message_id = m.id), '[]'::json)"
        ")::text as entry from public.messages m"
        " where m.conversation_id = $1 and m.seq > $2 order by m.seq limit $3",
        conversation_id,
        after,
        limit,
    )
    return [(r["seq"], r["entry"]) for r in rows]


UsageKey = tuple[datetime, int]


async def usage_records(
    conn: Connection, *, after: UsageKey | None, limit: int
) -> list[tuple[UsageKey, str]]:
    """The user's records in (created_at, id) order, a page after `after`: an index range
    scan of usage_records (user_id, created_at) from the page's start, whatever the size of
    the account or of the table (ids are not in any per-user index: paging by them read all
    of the user's records, or everyone's, at every page). Only the page's rows are built
    into JSON."""
    rows = await conn.fetch(
        f"select u.created_at, u.id, json_build_object({_USAGE}, 'conversation_id', u.conversation_id,"
        " 'message_id', u.message_id)::text as entry from"
        " (select * from public.usage_records u where u.user_id = (select auth.uid())"
        "   and ($1::timestamptz is null or (u.created_at >= $1 and (u.created_at, u.id) > ($1, $2)))"
        "   order by u.created_at, u.id limit $3) u order by u.created_at, u.id",
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
    )
    return [((r["created_at"], r["id"]), r["entry"]) for r in rows]


async def begin_import(conn: Connection, user: Claims, sha256: str) -> dict[str, Any] | None:
    """None: go on importing; else what importing this archive did before."""
    earlier: dict[str, Any] | None = await conn.fetchval(
        "select avatar_chat.begin_import($1, $2)", user.as_json(), sha256
    )
    return earlier


async def import_avatar(
    conn: Connection, user: Claims, avatar_json: str, *, replace: bool, within_s: float
) -> str:
    outcome: str = await conn.fetchval(
        "select avatar_chat.import_avatar($1, $2::text::jsonb, $3)",
        user.as_json(),
        avatar_json,
        replace,
        timeout=within_s,
    )
    return outcome


async def import_conversation(
    conn: Connection, user: Claims, conversation_json: str, *, within_s: float
) -> int:
    """A new conversation of the archive's; how many messages it wrote. `within_s`: a large
    conversation may take longer than DB_STATEMENT_TIMEOUT_MS (the import has its own)."""
    written: int = await conn.fetchval(
        "select avatar_chat.import_conversation($1, $2::text::jsonb)",
        user.as_json(),
        conversation_json,
        timeout=within_s,
    )
    return written


async def import_usage(conn: Connection, user: Claims, usage_json: str, *, within_s: float) -> int:
    added: int = await conn.fetchval(
        "select avatar_chat.import_usage($1, ($2::text::jsonb) -> 'records')",
        user.as_json(),
        usage_json,
        timeout=within_s,
    )
    return added


async def finish_import(conn: Connection, user: Claims, sha256: str, result: dict[str, Any]) -> datetime:
    at: datetime = await conn.fetchval(
        "select avatar_chat.finish_import($1, $2, $3)", user.as_json(), sha256, result
    )
    return at
