"""Sending a message: the payload, and the exchange that answers it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.schemas import StrictModel

CONTENT_MAX = 8000
IDEMPOTENCY_KEY_MAX = 200

Content = Annotated[str, StringConstraints(min_length=1, max_length=CONTENT_MAX)]


class MessageCreate(StrictModel):
    content: Content


class Exchange(BaseModel):
    """The answer to a send: the saved user message and the saved reply."""

    user_message: MessageRead
    assistant_message: MessageRead
