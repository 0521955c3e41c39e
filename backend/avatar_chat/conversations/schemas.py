"""Conversation and message payloads."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from avatar_chat.avatars.persona import PersonalityType
from avatar_chat.core.database import Record
from avatar_chat.core.schemas import NOT_BLANK, NextCursor, PartialUpdate, RowModel, StrictModel, stripped

TITLE_MAX = 200
PAGE_MAX = 100

Title = Annotated[str, StringConstraints(max_length=TITLE_MAX, pattern=NOT_BLANK), AfterValidator(stripped)]


class ConversationMode(StrEnum):
    assistant = "assistant"
    companion = "companion"


class MessageRole(StrEnum):
    user = "user"
    assistant = "assistant"
    notice = "notice"  # a safety notice the operator wrote (see NoticeKind); never sent to the model


class NoticeKind(StrEnum):
    disclosure = "disclosure"  # you are chatting with an AI, not a person
    break_reminder = "break"  # a minor has been chatting for a while
    crisis = "crisis"  # crisis services, after a message showing suicidal ideation or self-harm


class MessageStatus(StrEnum):
    streaming = "streaming"
    complete = "complete"
    failed = "failed"
    interrupted = "interrupted"
    stopped = "stopped"
    filtered = "filtered"  # a reply moderation stopped: its content is the operator's replacement text
    blocked = "blocked"  # a user message moderation refused: never sent to the model


class ConversationCreate(StrictModel):
    examples = ({"mode": "companion", "title": "Evening chat"},)

    mode: ConversationMode = ConversationMode.assistant
    title: Title | None = None


class ConversationUpdate(PartialUpdate):
    """Switch mode and/or rename; `title: null` clears a title."""

    examples = (
        {"title": "Weekend plans"},
        {"mode": "assistant", "title": None},
    )

    nullable = frozenset({"title"})

    mode: ConversationMode | None = None
    title: Title | None = None


class ConversationRead(RowModel):
    id: uuid.UUID
    user_id: uuid.UUID
    title: str | None
    mode: ConversationMode
    last_seq: int = Field(description="Highest message seq in the conversation.")
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationRead]
    next_cursor: NextCursor


class MessageRead(RowModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    seq: int
    role: MessageRole
    content: str
    status: MessageStatus
    persona_version: int | None = Field(description="Avatar version an assistant reply was generated with.")
    personality: PersonalityType | None = Field(
        description="Personality an assistant reply was generated with."
    )
    error_code: str | None = None
    variant: int = Field(default=0, description="Which alternative reply to its user message (0 first).")
    is_current: bool = Field(default=True, description="Whether history shows it and the model is given it.")
    reply_to: uuid.UUID | None = Field(default=None, description="For a reply: the user message it answers.")
    notice_kind: NoticeKind | None = Field(default=None, description="For a notice: which one.")
    created_at: datetime

    @classmethod
    def row_values(cls, row: Record | Mapping[str, Any]) -> dict[str, Any]:
        """`row` holds `MESSAGE_COLUMNS` (conversations.repository)."""
        values = super().row_values(row)
        values["status"] = effective_status(row["status"], row["lease_expires_at"])
        return values


class MessageVariants(BaseModel):
    """The alternative replies to one user message, by variant; one is current."""

    items: list[MessageRead]
    current_id: uuid.UUID | None


class MessagePage(BaseModel):
    items: list[MessageRead] = Field(description="Ascending by seq.")
    has_more: bool = Field(description="More messages exist beyond this page in the direction asked.")


def effective_status(status: str, lease_expires_at: datetime | None, now: datetime | None = None) -> str:
    """A reply still marked streaming after its lease ran out was cut off (its worker
    died or lost the database): say so, never let it pass for live or complete."""
    expired = lease_expires_at is not None and lease_expires_at <= (now or datetime.now(UTC))
    return MessageStatus.interrupted if status == MessageStatus.streaming and expired else status
