"""Following a reply from any worker: its events for a client that (re)connects (resume),
and stopping it. Every follower of a reply on this worker shares one reader of it
(chat.watch): from memory if this worker generates it, else what the generating worker
saved (chat.progress), polled every CHAT_STREAM_POLL_MS; nothing is held open between
polls. Reading a reply that is being generated marks it followed
(avatar_chat.reply_progress): its worker learns that within CHAT_DEMAND_POLL_MS and saves it
as it grows from then on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from avatar_chat.chat import repository
from avatar_chat.chat.demand import GeneratingReplies
from avatar_chat.chat.events import ReplyEvent, event_id, not_completed, parse_event_id
from avatar_chat.chat.watch import ReplyWatch
from avatar_chat.chat.window import SHOWN_TO_THE_MODEL
from avatar_chat.conversations import repository as conversations_repository
from avatar_chat.conversations.schemas import MessageRead, MessageStatus
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database, Record
from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.core.settings import Settings

_WATCHES_BEFORE_SWEEP = 1000


def _reply(row: Record, conversation_id: uuid.UUID, message_id: uuid.UUID, content: str) -> MessageRead:
    """The message (a reply, or a notice) from what reply_progress answered (with the text from 0)."""
    fields = {**dict(row.items()), "id": message_id, "conversation_id": conversation_id}
    return MessageRead.from_row({**fields, "content": content})


class ReplyFollower:
    def __init__(self, db: Database, generating: GeneratingReplies, settings: Settings) -> None:
        self._db = db
        self._generating = generating  # the replies this worker generates
        self._poll_s = settings.chat_stream_poll_ms / 1000
        self._stop_wait_s = settings.chat_stop_wait_s
        # How long a follower waits out a database it cannot reach before it says so.
        self._outage_patience_s = settings.db_acquire_timeout_s
        # The shared reader of each reply followed here, by (user, conversation, reply).
        self._watches: dict[tuple[uuid.UUID, uuid.UUID, uuid.UUID], ReplyWatch] = {}

    async def stop(self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
        """Ask the worker generating the reply (any worker) to stop at its next chunk; the
        reply is saved as `stopped` with the text so far. Waits up to CHAT_STOP_WAIT_S for
        that (on the reply's shared reader) and answers the reply as it then is; a settled
        reply is answered unchanged."""
        reply = await repository.request_stop(
            self._db, user, conversation_id=conversation_id, message_id=message_id
        )
        if reply.status != MessageStatus.streaming:
            return reply
        local = self._generating.get(message_id)
        if local is not None:
            local.request_stop()  # here: no need to wait for the next poll to learn it
        watch = await self._watch(user, conversation_id, message_id)
        watch.attach()
        try:
            async with asyncio.timeout(self._stop_wait_s):
                seen = -1
                while not watch.settled:
                    seen = watch.version
                    await watch.changed(seen)
        except TimeoutError:
            pass
        finally:
            self._detach(user, conversation_id, watch)
        if watch.error is not None or watch.status == MessageStatus.streaming:
            return reply
        if watch.status == MessageStatus.filtered:
            return await self._saved(user, conversation_id, message_id) or reply
        return _reply(watch.row, conversation_id, message_id, watch.text)

    async def _saved(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> MessageRead | None:
        """The reply as saved, whole: a filtered reply's text is a replacement, so what a
        follower read of it so far is no prefix of it."""
        async with self._db.as_user(user) as conn:
            return await conversations_repository.get_message(conn, conversation_id, message_id)

    async def follow(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID, *, last_event_id: str | None
    ) -> AsyncIterator[ReplyEvent]:
        """The events of a reply for a client that (re)connects, on any worker: its text
        after `last_event_id` at once, then the rest as it grows, then `done` or `error`.
        Raises NotFound before any event."""
        attempt, offset = parse_event_id(last_event_id)
        watch = await self._watch(user, conversation_id, message_id)
        return self._events(user, conversation_id, watch, attempt, offset)

    async def _watch(self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID) -> ReplyWatch:
        """The reply's shared reader on this worker: the one its other followers use (no
        statement), or a new one after a first read (NotFound if it is not theirs). The
        caller attaches to it, and detaches when done (the last one stops its reading)."""
        key = (user.sub, conversation_id, message_id)
        watch = self._watches.get(key)
        if watch is None:
            read = self._reader(user, conversation_id, message_id)
            first = await read(0)
            watch = self._watches.get(key)  # another follower may have made one meanwhile
            if watch is None:
                self._forget_unfollowed()
                watch = ReplyWatch(
                    message_id, first, read, lambda: self._generating.get(message_id), poll_s=self._poll_s
                )
                self._watches[key] = watch
        return watch

    def _forget_unfollowed(self) -> None:
        """Readers made for a follower whose stream never started (the client went away
        between the first read and the answer) are dropped once there are many of them."""
        if len(self._watches) >= _WATCHES_BEFORE_SWEEP:
            for key in [key for key, watch in self._watches.items() if watch.followers == 0]:
                del self._watches[key]

    def _detach(self, user: Claims, conversation_id: uuid.UUID, watch: ReplyWatch) -> None:
        if watch.detach():
            self._watches.pop((user.sub, conversation_id, watch.message_id), None)

    def _reader(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> Callable[[int], Awaitable[Record]]:
        loop = asyncio.get_running_loop()

        async def read(at: int) -> Record:
            """The reply from `at` on, waiting out a database that is away (a restart) for
            up to DB_ACQUIRE_TIMEOUT_S; then the followers hear it (follow_events)."""
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

        return read

    async def _events(
        self, user: Claims, conversation_id: uuid.UUID, watch: ReplyWatch, attempt: int | None, offset: int
    ) -> AsyncIterator[ReplyEvent]:
        message_id = watch.message_id
        watch.attach()
        try:
            seen = -1
            while True:
                if watch.version == seen:
                    await watch.changed(seen)
                seen = watch.version
                if watch.error is not None:
                    raise watch.error
                if attempt is not None and watch.attempt != attempt:
                    # A retry started the reply over: the client drops what it has.
                    attempt, offset = watch.attempt, 0
                    yield ReplyEvent("reset", {"attempt": attempt}, event_id(attempt, 0))
                attempt = watch.attempt
                if watch.settled and watch.status == MessageStatus.filtered:
                    # Moderation stopped it: the client replaces what it showed (docs/safety.md).
                    saved = await self._saved(user, conversation_id, message_id)
                    if saved is not None:
                        yield ReplyEvent("filtered", saved.model_dump(mode="json"), None)
                    return
                text = watch.text
                if len(text) > offset:
                    yield ReplyEvent("delta", {"content": text[offset:]}, event_id(attempt, len(text)))
                    offset = len(text)
                if watch.settled:
                    status = watch.status
                    if status in SHOWN_TO_THE_MODEL:
                        reply = _reply(watch.row, conversation_id, message_id, text)
                        yield ReplyEvent("done", reply.model_dump(mode="json"), event_id(attempt, len(text)))
                    else:
                        yield not_completed(message_id, str(status), watch.row["error_code"] or str(status))
                    return
        finally:
            self._detach(user, conversation_id, watch)
