"""Rows to API models, in one place."""

from __future__ import annotations

from datetime import UTC, datetime

from avatar_chat.chat.schemas import ConversationRead, MessageRead, MessageStatus
from avatar_chat.core.database import Record


def effective_status(status: str, lease_expires_at: datetime | None, now: datetime | None = None) -> str:
    """A reply still marked streaming after its lease ran out was cut off (its worker
    died or lost the database): say so, never let it pass for live or complete."""
    expired = lease_expires_at is not None and lease_expires_at <= (now or datetime.now(UTC))
    return MessageStatus.interrupted if status == MessageStatus.streaming and expired else status


def message(row: Record) -> MessageRead:
    return MessageRead(
        id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        role=row["role"],
        content=row["content"],
        status=effective_status(row["status"], row["lease_expires_at"]),
        persona_version=row["persona_version"],
        personality=row["personality"],
        error_code=row["error_code"],
        created_at=row["created_at"],
    )


def conversation(row: Record) -> ConversationRead:
    return ConversationRead.model_validate(dict(row.items()))
