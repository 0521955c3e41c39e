"""Following a reply from any worker: its events for a client that (re)connects (resume),
and stopping it. Both read what the generating worker saved (chat.progress), polling every
CHAT_STREAM_POLL_MS; nothing is held open between polls. Reading a reply that is being
generated marks it followed (avatar_chat.reply_progress): its worker learns that within
CHAT_DEMAND_POLL_MS (at once when it is this one) and saves it as it grows from then on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from avatar_chat.chat import repository
from avatar_chat.chat.demand import GeneratingReplies
from avatar_chat.chat.events import ReplyEvent, event_id, not_completed, parse_event_id
from avatar_chat.chat.window import SHOWN_TO_THE_MODEL
from avatar_chat.conversations.schemas import MessageRead, MessageStatus, effective_status
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database, Record
from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.core.settings import Settings


def _reply(row: Record, conversation_id: uuid.UUID, message_id: uuid.UUID, content: str) -> MessageRead:
    """An assistant message from what reply_progress answered (with the text from 0)."""
    fields = {**dict(row.items()), "id": message_id, "conversation_id": conversation_id, "role": "assistant"}
    return MessageRead.from_row({**fields, "content": content})


class ReplyFollower:
    def __init__(self, db: Database, generating: GeneratingReplies, settings: Settings) -> None:
        self._db = db
        self._generating = generating  # the replies this worker generates
        self._poll_s = settings.chat_stream_poll_ms / 1000
        self._stop_wait_s = settings.chat_stop_wait_s
        # How long a follower waits out a database it cannot reach before it says so.
        self._outage_patience_s = settings.db_acquire_timeout_s

    async def stop(self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
        """Ask the worker generating the reply (any worker) to stop at its next chunk; the
        reply is saved as `stopped` with the text so far. Waits up to CHAT_STOP_WAIT_S for
        that and answers the reply as it then is; a settled reply is answered unchanged."""
        reply = await repository.request_stop(
            self._db, user, conversation_id=conversation_id, message_id=message_id
        )
        if reply.status != MessageStatus.streaming:
            return reply
        local = self._generating.get(message_id)
        if local is not None:
            local.request_stop()  # here: no need to wait for the next poll to learn it
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._stop_wait_s
        while loop.time() < give_up_at:
            await asyncio.sleep(self._poll_s)
            row = await repository.reply_progress(
                self._db, user, conversation_id=conversation_id, message_id=message_id, offset=0
            )
            reply = _reply(row, conversation_id, message_id, row["tail"])
            if reply.status != MessageStatus.streaming:
                return reply
        return reply

    async def follow(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID, *, last_event_id: str | None
    ) -> AsyncIterator[ReplyEvent]:
        """The events of a reply for a client that (re)connects, on any worker: its text
        after `last_event_id` at once, then the rest as it is saved (polled every
        CHAT_STREAM_POLL_MS), then `done` or `error`. Raises NotFound before any event."""
        attempt, offset = parse_event_id(last_event_id)
        local = self._generating.get(message_id)
        if local is not None:
            local.demand()  # generated here: saved as it grows from now on, without waiting for a poll
        row = await repository.reply_progress(
            self._db, user, conversation_id=conversation_id, message_id=message_id, offset=offset
        )
        return self._events(user, conversation_id, message_id, row, attempt, offset)

    async def _events(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        row: Record,
        attempt: int | None,
        offset: int,
    ) -> AsyncIterator[ReplyEvent]:
        loop = asyncio.get_running_loop()

        async def fetch(at: int) -> Record:
            """The reply from `at` on, waiting out a database that is away (a restart) for
            up to DB_ACQUIRE_TIMEOUT_S; then the client hears it (follow_events)."""
            unreachable_since: float | None = None
            while True:
                try:
                    return await repository.reply_progress(
                        self._db, user, conversation_id=conversation_id, message_id=message_id, offset=at
                    )
                except ServiceUnavailable:
                    unreachable_since = unreachable_since or loop.time()
                    if loop.time() - unreachable_since >= self._outage_patience_s:
                        raise
                    await asyncio.sleep(max(self._poll_s, 0.2))

        read_at = offset  # where `row`'s tail starts: at 0 it holds the whole text
        while True:
            if attempt is not None and row["attempt"] != attempt:
                # A retry started the reply over: the client drops what it has.
                attempt, offset = row["attempt"], 0
                yield ReplyEvent("reset", {"attempt": attempt}, event_id(attempt, 0))
                row, read_at = await fetch(0), 0
                continue
            attempt = row["attempt"]
            if row["tail"]:
                offset = row["length"]
                yield ReplyEvent("delta", {"content": row["tail"]}, event_id(attempt, offset))
            status = effective_status(row["status"], row["lease_expires_at"])
            if status != MessageStatus.streaming:
                final = row if read_at == 0 else await fetch(0)
                if final["attempt"] != attempt:
                    row = final
                    continue
                reply = _reply(final, conversation_id, message_id, final["tail"])
                if status in SHOWN_TO_THE_MODEL:
                    yield ReplyEvent(
                        "done", reply.model_dump(mode="json"), event_id(attempt, final["length"])
                    )
                else:
                    yield not_completed(message_id, str(status), row["error_code"] or str(status))
                return
            await asyncio.sleep(self._poll_s)
            row, read_at = await fetch(offset), offset
