"""The SQL of a chat turn. The `avatar_chat` functions take the caller's claims and run
in one round trip (`Database.call_as`); the rest runs inside the caller's unit of work."""

from __future__ import annotations

import uuid

from avatar_chat.conversations.repository import MESSAGE_COLUMNS
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Connection, Database, Record


async def begin_turn(
    db: Database,
    user: Claims,
    *,
    conversation_id: uuid.UUID,
    content: str,
    idempotency_key: str | None,
    lease_s: float,
    worker_id: int | None,
    known_avatar: tuple[uuid.UUID, int] | None,
    known_window: tuple[int, int] | None,
    window_limit: int,
) -> Record:
    """Save the user's message and a placeholder reply; see avatar_chat.begin_turn.

    `known_avatar` (id, version) and `known_window` (last seq, revision) are what this
    worker has cached: the persona and the window come back only where they do not match.
    """
    avatar_id, avatar_version = known_avatar or (None, None)
    window_seq, window_revision = known_window or (None, None)
    row = await db.call_as(
        user,
        "select outcome, mode, revision, title_unset, prev_seq, avatar_id, avatar_version,"
        " persona_name, persona_personality, persona_backstory,"
        " window_seqs, window_roles, window_contents, window_statuses,"
        " user_message_id, user_seq, user_created_at, reply_id, reply_seq, reply_attempt, reply_created_at,"
        " reply_content, reply_persona_version, reply_personality"
        " from avatar_chat.begin_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        conversation_id,
        content,
        idempotency_key,
        lease_s,
        worker_id,
        avatar_id,
        avatar_version,
        window_seq,
        window_revision,
        window_limit,
    )
    assert row is not None
    return row


async def finish_turn(
    db: Database,
    user: Claims,
    *,
    reply_id: uuid.UUID,
    attempt: int,
    content: str,
    status: str,
    error_code: str | None,
    persona_version: int | None,
    personality: str | None,
) -> Record | None:
    """Settle the reply; no row when a newer attempt took it over."""
    return await db.call_as(
        user,
        f"select {MESSAGE_COLUMNS} from avatar_chat.finish_turn("
        "$1, $2, $3, $4, $5::public.message_status, $6, $7, $8::public.personality_type)",
        reply_id,
        attempt,
        content,
        status,
        error_code,
        persona_version,
        personality,
    )


async def extend_lease(
    db: Database, user: Claims, *, reply_id: uuid.UUID, attempt: int, lease_s: float
) -> bool:
    """Keep a reply being generated from being taken over; False once it is not ours."""
    row = await db.call_as(
        user, "select avatar_chat.extend_lease($1, $2, $3, $4) as extended", reply_id, attempt, lease_s
    )
    assert row is not None
    extended: bool = row["extended"]
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
