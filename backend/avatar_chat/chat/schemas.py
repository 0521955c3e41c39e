"""Conversation and message payloads."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from avatar_chat.avatars.schemas import PersonalityType
from avatar_chat.core.schemas import PartialUpdate, StrictModel

TITLE_MAX = 200
CONTENT_MAX = 8000
PAGE_MAX = 100
IDEMPOTENCY_KEY_MAX = 200

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=CONTENT_MAX)]


class ConversationMode(StrEnum):
    assistant = "assistant"
    companion = "companion"


class MessageRole(StrEnum):
    user = "user"
    assistant = "assistant"


class MessageStatus(StrEnum):
    streaming = "streaming"
    complete = "complete"
    failed = "failed"
    interrupted = "interrupted"


class ConversationCreate(StrictModel):
    mode: ConversationMode = ConversationMode.assistant
    title: Title | None = None


class ConversationUpdate(PartialUpdate):
    """Switch mode and/or rename; `title: null` clears a title."""

    nullable = frozenset({"title"})

    mode: ConversationMode | None = None
    title: Title | None = None


class ConversationRead(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    title: str | None
    mode: ConversationMode
    last_seq: int = Field(description="Highest message seq in the conversation.")
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )


class MessageCreate(StrictModel):
    content: Content


class MessageRead(BaseModel):
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
    created_at: datetime


class MessagePage(BaseModel):
    items: list[MessageRead] = Field(description="Ascending by seq.")
    has_more: bool = Field(description="More messages exist beyond this page in the direction asked.")


class Exchange(BaseModel):
    """The answer to a send: the saved user message and the saved reply."""

    user_message: MessageRead
    assistant_message: MessageRead
