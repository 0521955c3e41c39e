"""Conversation and message SQL. Runs inside the caller's RLS-scoped unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from avatar_chat.core.database import Connection, Record
from avatar_chat.core.errors import Conflict, NotFound, TooManyRequests, ValidationFailed

CONVERSATION_COLUMNS = "id, user_id, title, mode::text as mode, last_seq, created_at, updated_at"
MESSAGE_COLUMNS = (
    "id, conversation_id, seq, role::text as role, content, status::text as status, persona_version,"
    " personality::text as personality, error_code, lease_expires_at, created_at"
)
WINDOW_COLUMNS = "seq, role::text as role, content, status::text as status, lease_expires_at"

CONVERSATION_NOT_FOUND = "No such conversation."


async def create_conversation(conn: Connection, *, mode: str, title: str | None) -> Record:
    row = await conn.fetchrow(
        f"insert into public.conversations (mode, title) values ($1::public.conversation_mode, $2)"
        f" returning {CONVERSATION_COLUMNS}",
        mode,
        title,
    )
    assert row is not None
    return row


async def list_conversations(
    conn: Connection, *, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[Record]:
    """Newest first, keyset-paginated on (created_at, id), which never changes."""
    if before is None:
        return await conn.fetch(
            f"select {CONVERSATION_COLUMNS} from public.conversations"
            " where user_id = (select auth.uid()) order by created_at desc, id desc limit $1",
            limit,
        )
    return await conn.fetch(
        f"select {CONVERSATION_COLUMNS} from public.conversations"
        " where user_id = (select auth.uid()) and (created_at, id) < ($2, $3)"
        " order by created_at desc, id desc limit $1",
        limit,
        before[0],
        before[1],
    )


async def get_conversation(conn: Connection, conversation_id: uuid.UUID) -> Record | None:
    return await conn.fetchrow(
        f"select {CONVERSATION_COLUMNS} from public.conversations where id = $1", conversation_id
    )


async def update_conversation(
    conn: Connection, conversation_id: uuid.UUID, changes: dict[str, Any]
) -> Record | None:
    return await conn.fetchrow(
        "update public.conversations c"
        "   set mode = case when $2::jsonb ? 'mode'"
        "                   then ($2::jsonb ->> 'mode')::public.conversation_mode else c.mode end,"
        "       title = case when $2::jsonb ? 'title' then $2::jsonb ->> 'title' else c.title end"
        f" where c.id = $1 returning {CONVERSATION_COLUMNS}",
        conversation_id,
        changes,
    )


async def delete_conversation(conn: Connection, conversation_id: uuid.UUID) -> bool:
    deleted = await conn.fetchval(
        "delete from public.conversations where id = $1 returning id", conversation_id
    )
    return deleted is not None


async def list_messages(
    conn: Connection, conversation_id: uuid.UUID, *, after: int | None, before: int | None, limit: int
) -> list[Record]:
    """Ascending by seq: the page after `after`, or the last page before `before`."""
    if before is not None:
        rows = await conn.fetch(
            f"select {MESSAGE_COLUMNS} from public.messages"
            " where conversation_id = $1 and seq < $2 order by seq desc limit $3",
            conversation_id,
            before,
            limit,
        )
        return rows[::-1]
    return await conn.fetch(
        f"select {MESSAGE_COLUMNS} from public.messages"
        " where conversation_id = $1 and seq > $2 order by seq limit $3",
        conversation_id,
        after or 0,
        limit,
    )


async def conversation_exists(conn: Connection, conversation_id: uuid.UUID) -> bool:
    found: bool = await conn.fetchval(
        "select exists (select from public.conversations where id = $1)", conversation_id
    )
    return found


async def load_window(
    conn: Connection, conversation_id: uuid.UUID, *, upto_seq: int, limit: int
) -> list[Record]:
    """The last `limit` messages at or before `upto_seq`, newest first."""
    return await conn.fetch(
        f"select {WINDOW_COLUMNS} from public.messages"
        " where conversation_id = $1 and seq <= $2 order by seq desc limit $3",
        conversation_id,
        upto_seq,
        limit,
    )


async def begin_turn(
    conn: Connection,
    *,
    claims_json: str,
    conversation_id: uuid.UUID,
    content: str,
    idempotency_key: str | None,
    lease_s: float,
    worker_id: int | None,
) -> Record:
    """One round trip; see avatar_chat.begin_turn in the chat migration."""
    try:
        row = await conn.fetchrow(
            "select outcome, mode::text as mode, revision, title, prev_seq, avatar_id, avatar_version,"
            " user_message, reply from avatar_chat.begin_turn($1, $2, $3, $4, $5, $6)",
            claims_json,
            conversation_id,
            content,
            idempotency_key,
            lease_s,
            worker_id,
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "AC404":
            raise NotFound(CONVERSATION_NOT_FOUND, code="conversation_not_found") from exc
        if exc.sqlstate == "AC409":
            raise Conflict("Create your avatar first (POST /avatars/me).", code="avatar_required") from exc
        if exc.sqlstate == "AC429":
            code = getattr(exc, "hint", None) or "rate_limited"
            retry_after = getattr(exc, "detail", None) or "1"
            raise TooManyRequests(str(exc), code=code, headers={"Retry-After": retry_after}) from exc
        if exc.sqlstate == "AC422":
            raise ValidationFailed(
                "This Idempotency-Key was already used for a different message.",
                code="idempotency_key_reused",
            ) from exc
        raise
    assert row is not None
    return row


async def finish_turn(
    conn: Connection,
    *,
    claims_json: str,
    reply_id: uuid.UUID,
    attempt: int,
    content: str,
    status: str,
    error_code: str | None,
    persona_version: int | None,
    personality: str | None,
) -> Record | None:
    return await conn.fetchrow(
        f"select {MESSAGE_COLUMNS} from avatar_chat.finish_turn("
        "$1, $2, $3, $4, $5::public.message_status, $6, $7, $8::public.personality_type)",
        claims_json,
        reply_id,
        attempt,
        content,
        status,
        error_code,
        persona_version,
        personality,
    )


async def extend_lease(
    conn: Connection, *, claims_json: str, reply_id: uuid.UUID, attempt: int, lease_s: float
) -> bool:
    """Keep a reply being generated from being taken over; False once it is not ours."""
    extended: bool = await conn.fetchval(
        "select avatar_chat.extend_lease($1, $2, $3, $4)", claims_json, reply_id, attempt, lease_s
    )
    return extended


async def first_exchange(conn: Connection, conversation_id: uuid.UUID) -> Record | None:
    """The conversation's title-less state and first user message, as committed."""
    return await conn.fetchrow(
        "select c.title, m.content from public.conversations c"
        " join public.messages m on m.conversation_id = c.id and m.role = 'user'"
        " where c.id = $1 order by m.seq limit 1",
        conversation_id,
    )


async def set_title_if_unset(conn: Connection, conversation_id: uuid.UUID, title: str) -> None:
    """Never overwrites a title the user (or a concurrent task) set meanwhile."""
    await conn.execute(
        "update public.conversations set title = $2 where id = $1 and title is null", conversation_id, title
    )
