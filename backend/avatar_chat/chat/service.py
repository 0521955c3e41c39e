"""The rules of a chat turn, in order; each step is a module of its own (the package's
docstring shows the whole flow).

1. Admission (chat.admission), one round trip and one transaction: the user's message is
   saved with its `seq`, a placeholder for the reply is saved as `streaming` with a lease,
   and the versions the persona and the window are checked against come back (G1).
   Nothing is held open after it: no connection, no transaction.
2. Generation (chat.generation): the reply streams from the provider in a tracked
   background task, so it is saved even when the client goes away; while a client follows
   it or asks to stop it from any worker (chat.demand), its text so far is saved at a
   bounded rate (chat.progress), so any worker can resume or stop it (chat.follow);
   `finish_turn` (one round trip) settles it.
3. Memory (chat.memory): work that needs the committed exchange (the cached window, the
   summary) starts after step 2 returned (G4).

Regenerating the latest reply and editing the latest user message follow the same steps
with `begin_regenerate` in place of `begin_turn`: a new alternative reply, generated with
the current persona.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat import repository
from avatar_chat.chat.admission import Admission, Admitted
from avatar_chat.chat.context import ChatContext
from avatar_chat.chat.demand import GeneratingReplies
from avatar_chat.chat.events import ReplyEvent
from avatar_chat.chat.follow import ReplyFollower
from avatar_chat.chat.generation import ReplyGenerator
from avatar_chat.chat.memory import Memory
from avatar_chat.chat.metrics import ChatMetrics, ChatStats
from avatar_chat.chat.moderation import Moderation, SafetyPolicy
from avatar_chat.chat.streams import OpenStreams
from avatar_chat.chat.turn import Turn
from avatar_chat.chat.window import ConversationWindow
from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database
from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider
from avatar_chat.safety.base import Moderator


class ChatService:
    def __init__(
        self,
        db: Database,
        store: SessionStore[AvatarSnapshot, ConversationWindow],
        llm: LLMProvider,
        tasks: TaskTracker,
        settings: Settings,
        *,
        worker_id: Callable[[], int | None] = lambda: None,
        metrics: ChatMetrics | None = None,
        moderator: Moderator | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._metrics = metrics or ChatMetrics()
        self.tasks = tasks
        self.stats = ChatStats()
        context = ChatContext(db, store, llm, tasks, settings, self._metrics, self.stats)
        memory = Memory(context)
        # Moderation in and out (docs/safety.md): `moderator` is the provider (None: off).
        self.moderation = Moderation(
            moderator, SafetyPolicy.from_settings(settings), self._metrics.moderation
        )
        self._admission = Admission(context, memory, self.moderation, worker_id=worker_id)
        self.generating = GeneratingReplies(
            db,
            tasks,
            worker_id=worker_id,
            poll_s=settings.chat_demand_poll_ms / 1000,
            lease_s=settings.chat_reply_lease_s,
        )
        self._generator = ReplyGenerator(context, memory, self.generating, self.moderation)
        self._follower = ReplyFollower(db, self.generating, settings)
        self.streams = OpenStreams(settings.max_open_streams_per_user)

    async def send(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        content: str,
        *,
        idempotency_key: str | None,
        stream: bool = True,
        accept_language: str | None = None,
    ) -> Turn:
        """Accept a send. The whole turn runs in a tracked task: a client that goes away
        right after sending (an app sent to the background) still gets its reply saved,
        instead of leaving a committed message whose reply nobody generates.
        `accept_language` picks the crisis notice's text (docs/safety.md)."""
        return await self._start(
            lambda: self._admission.begin(user, conversation_id, content, idempotency_key, accept_language),
            stream,
        )

    async def regenerate(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        *,
        new_content: str | None = None,
        idempotency_key: str | None,
        stream: bool = True,
        accept_language: str | None = None,
    ) -> Turn:
        """A new alternative to the latest reply `message_id` (`new_content` None), or the
        latest user message `message_id` edited to `new_content` and answered anew
        (`accept_language`: the crisis notice's language, should moderation refuse the edit)."""
        return await self._start(
            lambda: self._admission.begin_regenerate(
                user, conversation_id, message_id, new_content, idempotency_key, accept_language
            ),
            stream,
        )

    async def _start(self, begin: Callable[[], Awaitable[Admitted]], stream: bool) -> Turn:
        accepted: asyncio.Future[Turn] = asyncio.get_running_loop().create_future()
        # Retrieved here so that an answer nobody waits for any more is not reported as lost.
        accepted.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.tasks.spawn(self._run(begin, stream, accepted), name="turn")
        return await asyncio.shield(accepted)

    async def _run(
        self, begin: Callable[[], Awaitable[Admitted]], stream: bool, accepted: asyncio.Future[Turn]
    ) -> None:
        """Admit the turn, answer the caller, then generate the reply (none for a replay)."""
        try:
            turn, plan = await begin()
            turn.streaming = stream
        except Exception as exc:  # AppError for the client; anything else it sees as a 500
            self._admission.count_refused(exc)
            accepted.set_exception(exc)
            return
        except asyncio.CancelledError:  # shutdown before the turn began
            self._metrics.turns["refused"].inc()
            accepted.set_exception(ServiceUnavailable("Shutting down; retry.", code="shutting_down"))
            raise
        accepted.set_result(turn)
        if plan is None:
            self._metrics.turns["replayed"].inc()
        else:
            await self._generator.run(plan, turn)

    # --- after the turn: stop, follow (any worker), delete ----------------------------------

    async def stop(self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID) -> MessageRead:
        return await self._follower.stop(user, conversation_id, message_id)

    async def follow(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID, *, last_event_id: str | None
    ) -> AsyncIterator[ReplyEvent]:
        return await self._follower.follow(user, conversation_id, message_id, last_event_id=last_event_id)

    async def choose_reply(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> MessageRead:
        """The reply becomes its exchange's current alternative (what the model reads next)."""
        try:
            return await repository.choose_reply(
                self._db, user, conversation_id=conversation_id, message_id=message_id
            )
        finally:
            await self._store.invalidate_conversation(conversation_id)

    async def delete_message(self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        try:
            await repository.delete_message(
                self._db, user, conversation_id=conversation_id, message_id=message_id
            )
        finally:
            await self._store.invalidate_conversation(conversation_id)
