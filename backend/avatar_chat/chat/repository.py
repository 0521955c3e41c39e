"""The SQL of a chat turn. The `avatar_chat` functions take the caller's claims and run
in one round trip (`Database.call_as`); the rest runs inside the caller's unit of work."""

from __future__ import annotations

import uuid
from typing import Any

from avatar_chat.conversations.repository import MESSAGE_COLUMNS
from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database, Record


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
    known_window: tuple[int, int, int | None] | None,
    window_limit: int,
    safety: dict[str, Any] | None,
) -> Record:
    """Save the user's message and a placeholder reply; see avatar_chat.begin_turn.

    `known_avatar` (id, version) and `known_window` (last seq, revision, summary seq) are
    what this worker has cached: persona, window and summary come back only where they
    do not match.
    """
    avatar_id, avatar_version = known_avatar or (None, None)
    window_seq, window_revision, summary_seq = known_window or (None, None, None)
    row = await db.call_as(
        user,
        "select outcome, mode, revision, avatar_id, avatar_version,"
        " persona_name, persona_personality, persona_backstory,"
        " window_seqs, window_roles, window_contents, window_statuses, summary_seq, summary_content,"
        " user_message_id, user_seq, user_created_at, reply_id, reply_seq, reply_attempt, reply_created_at,"
        " reply_variant, reply_content, reply_persona_version, reply_personality,"
        " minor, notice_ids, notice_seqs, notice_kinds, notice_contents, notice_created_ats,"
        " plan_name, plan_models, plan_max_reply_tokens"
        " from avatar_chat.begin_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)",
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
        summary_seq,
        safety,  # the pool's codec encodes jsonb
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
    moderation: dict[str, Any] | None = None,
    usage: list[dict[str, Any]] | None = None,
) -> Record | None:
    """Settle the reply; no row when a newer attempt took it over. `moderation`: what
    moderation of the reply did, recorded as a safety event; `usage`: what the attempt
    spent (avatar_chat.record_usage), recorded either way."""
    return await db.call_as(
        user,
        f"select {MESSAGE_COLUMNS} from avatar_chat.finish_turn("
        "$1, $2, $3, $4, $5::public.message_status, $6, $7, $8::public.personality_type,"
        " $9::jsonb, $10::jsonb)",
        reply_id,
        attempt,
        content,
        status,
        error_code,
        persona_version,
        personality,
        moderation,
        usage or None,
    )


async def begin_regenerate(
    db: Database,
    user: Claims,
    *,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    new_content: str | None,
    idempotency_key: str | None,
    lease_s: float,
    worker_id: int | None,
    known_avatar: tuple[uuid.UUID, int] | None,
    window_limit: int,
    usage: list[dict[str, Any]] | None = None,
) -> Record:
    """A new alternative reply (`new_content` None) or an edit of the latest user message;
    see avatar_chat.begin_regenerate. Answers as begin_turn, plus the user message's text.
    `usage`: what moderating the edit cost."""
    avatar_id, avatar_version = known_avatar or (None, None)
    row = await db.call_as(
        user,
        "select outcome, mode, revision, avatar_id, avatar_version,"
        " persona_name, persona_personality, persona_backstory,"
        " window_seqs, window_roles, window_contents, window_statuses,"
        " user_message_id, user_seq, user_created_at, user_content,"
        " reply_id, reply_seq, reply_attempt, reply_created_at, reply_variant,"
        " reply_content, reply_persona_version, reply_personality, minor,"
        " plan_name, plan_models, plan_max_reply_tokens"
        " from avatar_chat.begin_regenerate($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)",
        conversation_id,
        message_id,
        new_content,
        idempotency_key,
        lease_s,
        worker_id,
        avatar_id,
        avatar_version,
        window_limit,
        usage or None,
    )
    assert row is not None
    return row


async def save_partial(
    db: Database, user: Claims, *, reply_id: uuid.UUID, attempt: int, content: str, lease_s: float
) -> bool | None:
    """Save the text so far (and renew the lease). True when a stop was asked for;
    None once the reply is not this attempt's any more (settled, stopped elsewhere, taken over)."""
    row = await db.call_as(
        user,
        "select avatar_chat.save_partial($1, $2, $3, $4, $5) as stop_requested",
        reply_id,
        attempt,
        content,
        lease_s,
    )
    assert row is not None
    wants_stop: bool | None = row["stop_requested"]
    return wants_stop


async def worker_replies(
    db: Database, *, worker_id: int | None, renew: list[uuid.UUID], lease_s: float
) -> list[Record]:
    """Renew the leases of `renew` that have less than half left; the ids (and whether a stop
    was asked for) of this worker's replies that a client follows or asked to stop. Every
    user's replies at once, so on the API's own connection; see avatar_chat.worker_replies."""
    async with db.connection() as conn:
        return await conn.fetch(
            "select id, stop_requested from avatar_chat.worker_replies($1, $2, $3)", worker_id, renew, lease_s
        )


async def request_stop(
    db: Database, user: Claims, *, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead:
    """Ask for the reply to stop; see avatar_chat.request_stop. The reply as it now is."""
    row = await db.call_as(
        user,
        f"select {MESSAGE_COLUMNS} from avatar_chat.request_stop($1, $2, $3)",
        conversation_id,
        message_id,
    )
    assert row is not None
    return MessageRead.from_row(row)


async def reply_progress(
    db: Database, user: Claims, *, conversation_id: uuid.UUID, message_id: uuid.UUID, offset: int
) -> Record:
    """A reply's (or a notice's) state and its text from `offset` on; see avatar_chat.reply_progress."""
    row = await db.call_as(
        user,
        "select seq, status, attempt, length, tail, lease_expires_at, error_code, persona_version,"
        " personality, variant, is_current, reply_to, created_at, role, notice_kind"
        " from avatar_chat.reply_progress($1, $2, $3, $4)",
        conversation_id,
        message_id,
        offset,
    )
    assert row is not None
    return row


async def delete_message(
    db: Database, user: Claims, *, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> None:
    await db.call_as(user, "select avatar_chat.delete_message($1, $2, $3)", conversation_id, message_id)


async def choose_reply(
    db: Database, user: Claims, *, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRead:
    """Make the reply the current alternative of its exchange; see avatar_chat.choose_reply."""
    row = await db.call_as(
        user,
        f"select {MESSAGE_COLUMNS} from avatar_chat.choose_reply($1, $2, $3)",
        conversation_id,
        message_id,
    )
    assert row is not None
    return MessageRead.from_row(row)


async def begin_summary(
    db: Database,
    user: Claims,
    *,
    conversation_id: uuid.UUID,
    after_seq: int,
    upto_seq: int,
    limit: int,
    worker_id: int | None,
    lease_s: float,
) -> tuple[uuid.UUID, list[tuple[int, str, str]]] | None:
    """Claim the conversation's summary for `lease_s` and read the current, shown messages in
    (after_seq, upto_seq], oldest first (the last `limit`), in one round trip. None when
    another worker's summary of it is running; see avatar_chat.begin_summary."""
    row = await db.call_as(
        user,
        "select claim, seqs, roles, contents from avatar_chat.begin_summary($1, $2, $3, $4, $5, $6, $7)",
        conversation_id,
        after_seq,
        upto_seq,
        limit,
        worker_id,
        lease_s,
    )
    if row is None:
        return None
    claim: uuid.UUID = row["claim"]
    return claim, list(zip(row["seqs"], row["roles"], row["contents"], strict=True))


async def end_summary(
    db: Database,
    *,
    conversation_id: uuid.UUID,
    claim: uuid.UUID,
    user_id: uuid.UUID,
    usage: list[dict[str, Any]] | None,
) -> None:
    """Release a claim of begin_summary (if it is still that one) and record what the
    summary cost the user, on the API's own connection."""
    async with db.connection() as conn:
        await conn.execute(
            "select avatar_chat.end_summary($1, $2, $3, $4::jsonb)",
            conversation_id,
            claim,
            user_id,
            usage or None,
        )


async def save_summary(
    db: Database,
    user: Claims,
    *,
    conversation_id: uuid.UUID,
    covers_upto_seq: int,
    revision: int,
    content: str,
) -> bool:
    """Stored only if the conversation is still at `revision`; see avatar_chat.save_summary."""
    row = await db.call_as(
        user,
        "select avatar_chat.save_summary($1, $2, $3, $4, $5) as stored",
        conversation_id,
        covers_upto_seq,
        revision,
        content,
    )
    assert row is not None
    stored: bool = row["stored"]
    return stored


async def record_refusal(
    db: Database,
    user: Claims,
    *,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    action: str,
    categories: list[str],
    provider: str,
) -> None:
    """Record that moderation refused an edit of `message_id`; see avatar_chat.record_refusal."""
    await db.call_as(
        user,
        "select avatar_chat.record_refusal($1, $2, $3, $4, $5, $6)",
        conversation_id,
        message_id,
        action,
        categories,
        provider,
    )
