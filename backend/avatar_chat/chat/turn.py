"""An accepted send as the router sees it: the saved user message, the reply's text as it
streams, and how the reply ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from avatar_chat.chat.schemas import Exchange
from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.errors import AppError, ProviderError, ProviderTimeout
from avatar_chat.llm.base import ProviderFailure


@dataclass(slots=True)
class TurnResult:
    """How a generation ended: the reply as saved, or why it is not.

    `failure`: the provider could not reply (502/504, the reply is saved as failed);
    `error`: anything else that stopped the turn (the database went away, the avatar was
    deleted meanwhile...), answered with its own status."""

    reply: MessageRead | None
    failure: ProviderFailure | None = None
    error: AppError | None = None

    def raise_for_failure(self, user_message: MessageRead) -> MessageRead:
        if self.error is not None:
            raise self.error
        if self.failure is not None:
            details = {
                "user_message_id": str(user_message.id),
                "assistant_message_id": str(self.reply.id) if self.reply else None,
                "retry": "Send again with the same Idempotency-Key to retry the reply.",
            }
            cls = ProviderTimeout if self.failure.timeout else ProviderError
            raise cls(self.failure.message, code=self.failure.code, details=details)
        assert self.reply is not None
        return self.reply


@dataclass(slots=True)
class Turn:
    """An accepted send. `replayed` turns are already complete; others are generating."""

    user_message: MessageRead
    replayed: MessageRead | None = None
    # The reply being generated, as begin_turn saved it (id, seq; no text yet); None for a
    # replay, and for a turn answered by a crisis notice alone.
    reply: MessageRead | None = None
    # Safety notices begin_turn saved with it, in seq order (disclosure, break before the
    # user's message; crisis after it), shown before the reply.
    notices: list[MessageRead] = field(default_factory=list)
    # The reply's attempt: with a character offset, the id of each SSE event (resume point).
    attempt: int = 1
    # Whether the client reads the text as it is generated (SSE); a JSON answer needs only the end.
    streaming: bool = True
    deltas: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    outcome: asyncio.Future[TurnResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def push(self, chunk: str) -> None:
        if self.streaming:
            self.deltas.put_nowait(chunk)

    def resolve(self, result: TurnResult) -> None:
        """Tell the client how it went; the first word counts (saving may go on after)."""
        if not self.outcome.done():
            self.outcome.set_result(result)

    def close(self, unfinished: AppError) -> None:
        """No more text; a client still waiting for an outcome gets `unfinished`."""
        self.resolve(TurnResult(reply=None, error=unfinished))
        self.deltas.put_nowait(None)

    @property
    def settled(self) -> bool:
        """Nothing is generated: a replay, or a crisis notice in place of a reply."""
        return self.replayed is not None or self.reply is None

    async def result(self) -> TurnResult:
        if self.settled:
            return TurnResult(reply=self.replayed)
        # shield: a client that goes away must not cancel anything (the reply is saved anyway)
        return await asyncio.shield(self.outcome)

    async def exchange(self) -> Exchange:
        if self.reply is None and self.replayed is None:
            return Exchange(user_message=self.user_message, assistant_message=None, notices=self.notices)
        reply = (await self.result()).raise_for_failure(self.user_message)
        return Exchange(user_message=self.user_message, assistant_message=reply, notices=self.notices)

    async def stream(self) -> AsyncIterator[str]:
        """The reply's text as it is generated (the whole text at once for a replay)."""
        if self.settled:
            if self.replayed is not None:
                yield self.replayed.content
            return
        while (chunk := await self.deltas.get()) is not None:
            yield chunk
