"""Sending a message: the payload, and the exchange that answers it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.schemas import TEXT, StrictModel

CONTENT_MAX = 8000
IDEMPOTENCY_KEY_MAX = 200

Content = Annotated[str, StringConstraints(min_length=1, max_length=CONTENT_MAX, pattern=TEXT)]


class MessageCreate(StrictModel):
    examples = ({"content": "Hello! How was your day?"},)

    content: Content


class Exchange(BaseModel):
    """The answer to a send: the saved user message, the saved reply, and the safety
    notices saved with them (docs/safety.md), in seq order."""

    user_message: MessageRead
    assistant_message: MessageRead | None = Field(
        description="The reply; null when a crisis notice was given in its place."
    )
    notices: list[MessageRead] = Field(
        default_factory=list,
        description="Notices saved with this exchange: an AI disclosure or break reminder before the"
        " message, a crisis notice after it.",
    )
