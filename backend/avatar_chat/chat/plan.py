"""A turn plan: what begin_turn (or begin_regenerate) committed for a reply, and what the
rest of the turn is checked against. Made by chat.admission, read by chat.generation and
chat.memory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.chat.window import WindowMessage
from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.claims import Claims


@dataclass(slots=True)
class TurnPlan:
    user: Claims
    conversation_id: uuid.UUID
    reply_id: uuid.UUID
    attempt: int
    user_message: MessageRead
    mode: str
    revision: int
    # The persona at the version begin_turn saw (G1), and the settled messages before
    # this turn; whether that window may be cached for the next turn.
    avatar: AvatarSnapshot
    window: tuple[WindowMessage, ...]
    window_cacheable: bool
    # The conversation's summary of what came before the window, valid at this revision.
    summary_seq: int | None
    summary: str
    # A new exchange (not a retry): only its window may be written to the cache.
    new_turn: bool
    # The worker recorded on the reply (None: this worker's liveness was not known, so
    # nobody can find the reply by worker; it is saved as it grows, chat.demand).
    worker_id: int | None
    # The user is a minor (begin_turn read it): the reply is moderated with the minors' actions.
    minor: bool = False
    # The user's plan as begin_turn read it (docs/usage.md): its name (recorded with what the
    # reply cost), the model asked for (None: LLM_MODEL) and the reply's token cap (None: LLM_MAX_TOKENS).
    plan_name: str | None = None
    model: str | None = None
    max_tokens: int | None = None
