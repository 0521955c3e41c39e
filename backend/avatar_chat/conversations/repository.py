"""Conversation and message-history SQL. Runs inside the caller's RLS-scoped unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from avatar_chat.conversations.schemas import ConversationRead, MessageRead
from avatar_chat.core.database import Connection

CONVERSATION_COLUMNS = "id, user_id, title, mode::text as mode, last_seq, created_at, updated_at"
MESSAGE_COLUMNS = (
    "id, conversation_id, seq, role::text as role, content, status::text as status, persona_version,"
    " personality::text as personality, error_code, lease_expires_at, variant, is_current, reply_to,"
    " notice_kind::text as notice_kind, created_at"
)


async def create_conversation(conn: Connection, *, mode: str, title: str | None) -> ConversationRead:
    row = await conn.fetchrow(
        f"insert into public.conversations (mode, title) values ($1::public.conversation_mode, $2)"
        f" returning {CONVERSATION_COLUMNS}",
        mode,
        title,
    )
    assert row is not None
    return ConversationRead.from_row(row)


async def list_conversations(
    conn: Connection, *, limit: int, before: tuple[datetime, uuid.UUID] | None
) -> list[ConversationRead]:
    """Newest first, keyset-paginated on (created_at, id), which never changes."""
    if before is None:
        rows = await conn.fetch(
            f"select {CONVERSATION_COLUMNS} from public.conversations"
            " where user_id = (select auth.uid()) order by created_at desc, id desc limit $1",
            limit,
        )
    else:
        rows = await conn.fetch(
            f"select {CONVERSATION_COLUMNS} from public.conversations"
            " where user_id = (select auth.uid()) and (created_at, id) < ($2, $3)"
            " order by created_at desc, id desc limit $1",
            limit,
            before[0],
            before[1],
        )
    return [ConversationRead.from_row(r) for r in rows]


async def get_conversation(conn: Connection, conversation_id: uuid.UUID) -> ConversationRead | None:
    row = await conn.fetchrow(
        f"select {CONVERSATION_COLUMNS} from public.conversations where id = $1", conversation_id
    )
    return None if row is None else ConversationRead.from_row(row)


async def update_conversation(
    conn: Connection, conversation_id: uuid.UUID, changes: dict[str, Any]
) -> ConversationRead | None:
    row = await conn.fetchrow(
        "update public.conversations c"
        "   set mode = case when $2::jsonb ? 'mode'"
        "                   then ($2::jsonb ->> 'mode')::public.conversation_mode else c.mode end,"
        "       title = case when $2::jsonb ? 'title' then $2::jsonb ->> 'title' else c.title end"
        f" where c.id = $1 returning {CONVERSATION_COLUMNS}",
        conversation_id,
        changes,
    )
    return None if row is None else ConversationRead.from_row(row)


async def delete_conversation(conn: Connection, conversation_id: uuid.UUID) -> bool:
    deleted = await conn.fetchval(
        "delete from public.conversations where id = $1 returning id", conversation_id
    )
    return deleted is not None


# A page reads only its own rows under RLS in any plan: messages_user_id_conversation_id_seq_idx.
# History shows the current alternative of each reply (regenerate and edit add others).
HISTORY_AFTER = (
    f"select {MESSAGE_COLUMNS} from public.messages"
    " where conversation_id = $1 and seq > $2 and seq < $4 and is_current order by seq limit $3"
)
HISTORY_BEFORE = (
    f"select {MESSAGE_COLUMNS} from public.messages"
    " where conversation_id = $1 and seq < $2 and is_current order by seq desc limit $3"
)


async def list_messages(
    conn: Connection, conversation_id: uuid.UUID, *, after: int | None, before: int | None, limit: int
) -> list[MessageRead]:
    """Ascending by seq: the page after `after` (up to `before` when both are given), or the last
    page before `before`."""
    if before is not None and after is None:
        rows = await conn.fetch(HISTORY_BEFORE, conversation_id, before, limit)
        rows.reverse()
    else:
        rows = await conn.fetch(HISTORY_AFTER, conversation_id, after or 0, limit, before or 2**53 + 1)
    return [MessageRead.from_row(r) for r in rows]


async def conversation_exists(conn: Connection, conversation_id: uuid.UUID) -> bool:
    found: bool = await conn.fetchval(
        "select exists (select from public.conversations where id = $1)", conversation_id
    )
    return found


async def get_message(
    conn: Connection, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead | None:
    row = await conn.fetchrow(
        f"select {MESSAGE_COLUMNS} from public.messages where id = $2 and conversation_id = $1",
        conversation_id,
        message_id,
    )
    return None if row is None else MessageRead.from_row(row)


async def list_variants(
    conn: Connection, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> list[MessageRead]:
    """Every alternative reply to the user message `message_id` answers (or is)."""
    rows = await conn.fetch(
        f"select {MESSAGE_COLUMNS} from public.messages"
        " where conversation_id = $1 and role = 'assistant' and reply_to = ("
        "   select coalesce(m.reply_to, m.id) from public.messages m"
        "    where m.id = $2 and m.conversation_id = $1)"
        " order by variant",
        conversation_id,
        message_id,
    )
    return [MessageRead.from_row(r) for r in rows]
