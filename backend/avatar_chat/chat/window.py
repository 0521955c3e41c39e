"""The recent messages (and the summary before them) a turn sends to the model, as cached
between turns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from avatar_chat.conversations.schemas import MessageStatus

# What the model sees of earlier replies: finished ones, and stopped ones (the user saw
# their text); never failed, cut off or still streaming ones.
SHOWN_TO_THE_MODEL = frozenset({MessageStatus.complete, MessageStatus.stopped})


@dataclass(frozen=True, slots=True)
class WindowMessage:
    seq: int
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ConversationWindow:
    """The last few settled messages of a conversation, up to and including `last_seq`,
    as of the conversation's `revision` (bumped when history is edited after the fact)."""

    conversation_id: uuid.UUID
    last_seq: int
    revision: int
    messages: tuple[WindowMessage, ...] = field(default_factory=tuple)
    # The conversation's summary at this revision (what came before the window), if any.
    summary_seq: int | None = None
    summary: str = ""


def fit_window(
    messages: Sequence[WindowMessage], *, max_messages: int, max_chars: int
) -> tuple[WindowMessage, ...]:
    """The most recent messages that fit both budgets (oldest dropped first). The char
    budget keeps the prompt within model context and a cached window to a few KB."""
    kept: list[WindowMessage] = []
    used = 0
    for message in reversed(messages[-max_messages:] if max_messages else ()):
        used += len(message.content)
        if used > max_chars:
            break
        kept.append(message)
    return tuple(reversed(kept))
