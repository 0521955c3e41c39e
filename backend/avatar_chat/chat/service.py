"""The rules of a chat turn.

1. `begin_turn` (one round trip, one transaction): the user's message is saved with its
   `seq`, a placeholder for the reply is saved as `streaming` with a lease, and the
   avatar's current version plus the conversation's mode, revision and previous seq come
   back. Nothing is held open after it: no connection, no transaction.
2. The persona and the recent window come from the SessionStore only if they match those
   versions exactly; otherwise they are reloaded. That is how changes made anywhere else
   (other workers and machines, the dashboard, SQL) are seen by the very next turn (G1).
3. The reply streams from the provider in a tracked background task, so it is saved even
   when the client goes away. Its text so far is saved at a bounded rate (chat.progress),
   so any worker can resume it for a client or stop it; `finish_turn` (one round trip)
   settles it with the persona used, as `complete`, `stopped` or `failed` with a code.
4. Work that needs the committed exchange (the title) starts after step 3 returned.

Regenerating the latest reply and editing the latest user message follow the same steps
with `begin_regenerate` in place of `begin_turn`: a new alternative reply, generated with
the current persona.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat import repository
from avatar_chat.chat.events import ReplyEvent, event_id, not_completed, parse_event_id
from avatar_chat.chat.metrics import ChatMetrics, ChatStats
from avatar_chat.chat.progress import ReplyProgress
from avatar_chat.chat.prompt import build_request
from avatar_chat.chat.turn import Turn, TurnResult
from avatar_chat.chat.window import ConversationWindow, WindowMessage, fit_window
from avatar_chat.conversations import repository as conversations_repository
from avatar_chat.conversations.schemas import MessageRead, MessageRole, MessageStatus, effective_status
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database, Record
from avatar_chat.core.errors import AppError, Conflict, ServiceUnavailable, TooManyRequests
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider, PromptMessage, ProviderFailure, SummaryRequest

log = logging.getLogger(__name__)

_TITLE_WORDS = 6
_TITLE_CHARS = 60


def make_title(first_message: str) -> str:
    words = first_message.split()[:_TITLE_WORDS]
    title = " ".join(words) or "New conversation"
    return title if len(title) <= _TITLE_CHARS else title[: _TITLE_CHARS - 1] + "…"


def _interrupted() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The reply was interrupted; retry with the same Idempotency-Key.", code="reply_interrupted"
    )


def _reply(row: Record, conversation_id: uuid.UUID, message_id: uuid.UUID, content: str) -> MessageRead:
    """An assistant message from what reply_progress answered (with the text from 0)."""
    fields = {**dict(row.items()), "id": message_id, "conversation_id": conversation_id, "role": "assistant"}
    return MessageRead.from_row({**fields, "content": content})


# At most this many messages are folded into a summary at once (the newest of them).
_SUMMARY_SOURCE_MESSAGES = 200

_IN_PROGRESS = "send_in_progress"


def _avatar_required() -> Conflict:
    return Conflict("Create your avatar first (POST /avatars/me).", code="avatar_required")


# What the model sees of earlier replies: finished ones, and stopped ones (the user saw
# their text); never failed, cut off or still streaming ones.
_SHOWN_TO_THE_MODEL = frozenset({MessageStatus.complete, MessageStatus.stopped})


@dataclass(slots=True)
class _Generation:
    """What begin_turn committed, and what the rest of the turn is checked against."""

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
    title_unset: bool


@dataclass(slots=True)
class _Generated:
    """What generating produced: the text, and how it ended."""

    parts: list[str] = field(default_factory=list)
    failure: ProviderFailure | None = None  # the provider could not reply
    error: AppError | None = None  # something else stopped the turn; the client gets it as is
    stopped: bool = False  # a client asked to stop: the text so far is the reply

    @property
    def content(self) -> str:
        return "".join(self.parts)

    @property
    def status(self) -> MessageStatus:
        if self.error_code is not None:
            return MessageStatus.failed
        return MessageStatus.stopped if self.stopped else MessageStatus.complete

    @property
    def error_code(self) -> str | None:
        if self.error is not None:
            return self.error.code
        return None if self.failure is None else self.failure.code


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
    ) -> None:
        self._db = db
        self._metrics = metrics or ChatMetrics()
        self._worker_id = worker_id
        self._store = store
        self._llm = llm
        self.tasks = tasks
        self._window_size = settings.chat_window_messages
        self._window_chars = settings.chat_window_max_chars
        self._deadline_s = settings.chat_turn_deadline_s
        # Short and renewed while the reply is generated (ReplyProgress): a reply whose
        # worker is gone can be retried within seconds.
        self.lease_s = settings.chat_reply_lease_s
        self._save_after_s = settings.chat_partial_save_ms / 1000
        self._save_after_chars = settings.chat_partial_save_chars
        self._poll_s = settings.chat_stream_poll_ms / 1000
        self._context_tokens = {
            "assistant": settings.chat_context_tokens_assistant,
            "companion": settings.chat_context_tokens_companion,
        }
        self._summary_chars = settings.chat_summary_max_chars
        self._stop_wait_s = settings.chat_stop_wait_s
        # Replies this worker is generating, so a stop it receives reaches them at once.
        self._generating: dict[uuid.UUID, ReplyProgress] = {}
        self.stats = ChatStats()

    async def send(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        content: str,
        *,
        idempotency_key: str | None,
        stream: bool = True,
    ) -> Turn:
        """Accept a send. The whole turn runs in a tracked task: a client that goes away
        right after sending (an app sent to the background) still gets its reply saved,
        instead of leaving a committed message whose reply nobody generates."""
        return await self._start(lambda: self._begin(user, conversation_id, content, idempotency_key), stream)

    async def regenerate(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        *,
        new_content: str | None = None,
        idempotency_key: str | None,
        stream: bool = True,
    ) -> Turn:
        """A new alternative to the latest reply `message_id` (`new_content` None), or the
        latest user message `message_id` edited to `new_content` and answered anew."""
        return await self._start(
            lambda: self._begin_regenerate(user, conversation_id, message_id, new_content, idempotency_key),
            stream,
        )

    async def _start(
        self, begin: Callable[[], Awaitable[tuple[Turn, _Generation | None]]], stream: bool
    ) -> Turn:
        accepted: asyncio.Future[Turn] = asyncio.get_running_loop().create_future()
        # Retrieved here so that an answer nobody waits for any more is not reported as lost.
        accepted.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.tasks.spawn(self._run(begin, stream, accepted), name="turn")
        return await asyncio.shield(accepted)

    async def _run(
        self,
        begin: Callable[[], Awaitable[tuple[Turn, _Generation | None]]],
        stream: bool,
        accepted: asyncio.Future[Turn],
    ) -> None:
        try:
            turn, generation = await begin()
            turn.streaming = stream
        except Exception as exc:  # AppError for the client; anything else it sees as a 500
            self._count_refused(exc)
            accepted.set_exception(exc)
            return
        except asyncio.CancelledError:  # shutdown before the turn began
            self._metrics.turns["refused"].inc()
            accepted.set_exception(ServiceUnavailable("Shutting down; retry.", code="shutting_down"))
            raise
        accepted.set_result(turn)
        if generation is None:
            self._metrics.turns["replayed"].inc()
        else:
            await self._generate(generation, turn)

    def _count_refused(self, exc: Exception) -> None:
        if isinstance(exc, Conflict) and exc.code == _IN_PROGRESS:
            self._metrics.turns["in_progress"].inc()
            return
        self._metrics.turns["refused"].inc()
        if isinstance(exc, TooManyRequests):
            refusals = self._metrics.rate_limited
            (refusals.get(exc.code) or refusals["rate_limited"]).inc()

    # --- stop, follow, delete -----------------------------------------------------------

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
            local.request_stop()  # here: no need to wait for its next save to learn it
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
        row = await repository.reply_progress(
            self._db, user, conversation_id=conversation_id, message_id=message_id, offset=offset
        )
        return self._follow(user, conversation_id, message_id, row, attempt, offset)

    async def _follow(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        row: Record,
        attempt: int | None,
        offset: int,
    ) -> AsyncIterator[ReplyEvent]:
        async def fetch(at: int) -> Record:
            return await repository.reply_progress(
                self._db, user, conversation_id=conversation_id, message_id=message_id, offset=at
            )

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
                if status in _SHOWN_TO_THE_MODEL:
                    done_id = event_id(attempt, final["length"])
                    yield ReplyEvent("done", reply.model_dump(mode="json"), done_id)
                else:
                    yield not_completed(message_id, str(status), row["error_code"] or str(status))
                return
            await asyncio.sleep(self._poll_s)
            row, read_at = await fetch(offset), offset

    async def delete_message(self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID) -> None:
        try:
            await repository.delete_message(
                self._db, user, conversation_id=conversation_id, message_id=message_id
            )
        finally:
            await self._store.invalidate_conversation(conversation_id)

    async def _begin(
        self, user: Claims, conversation_id: uuid.UUID, content: str, idempotency_key: str | None
    ) -> tuple[Turn, _Generation | None]:
        cached_avatar, cached_window = await self._store.for_turn(user.sub, conversation_id)
        row = await repository.begin_turn(
            self._db,
            user,
            conversation_id=conversation_id,
            content=content,
            idempotency_key=idempotency_key,
            lease_s=self.lease_s,
            worker_id=self._worker_id(),
            known_avatar=(cached_avatar.id, cached_avatar.version) if cached_avatar else None,
            known_window=(
                (cached_window.last_seq, cached_window.revision, cached_window.summary_seq)
                if cached_window
                else None
            ),
            window_limit=self._window_size,
        )
        # A replayed key has the same content: begin_turn checked it.
        return await self._accepted(user, conversation_id, row, content, cached_avatar, cached_window)

    async def _begin_regenerate(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        new_content: str | None,
        idempotency_key: str | None,
    ) -> tuple[Turn, _Generation | None]:
        cached_avatar, _ = await self._store.for_turn(user.sub, conversation_id)
        row = await repository.begin_regenerate(
            self._db,
            user,
            conversation_id=conversation_id,
            message_id=message_id,
            new_content=new_content,
            idempotency_key=idempotency_key,
            lease_s=self.lease_s,
            worker_id=self._worker_id(),
            known_avatar=(cached_avatar.id, cached_avatar.version) if cached_avatar else None,
            window_limit=self._window_size,
        )
        return await self._accepted(user, conversation_id, row, row["user_content"], cached_avatar, None)

    async def _accepted(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        row: Record,
        user_content: str,
        cached_avatar: AvatarSnapshot | None,
        cached_window: ConversationWindow | None,
    ) -> tuple[Turn, _Generation | None]:
        """What begin_turn or begin_regenerate answered, as the turn the router gets and
        the generation to run (None for a replay)."""
        user_message = MessageRead(
            id=row["user_message_id"],
            conversation_id=conversation_id,
            seq=row["user_seq"],
            role=MessageRole.user,
            content=user_content,
            status=MessageStatus.complete,
            persona_version=None,
            personality=None,
            created_at=row["user_created_at"],
        )
        outcome: str = row["outcome"]
        if outcome == "replay":
            replayed = MessageRead(
                id=row["reply_id"],
                conversation_id=conversation_id,
                seq=row["reply_seq"],
                role=MessageRole.assistant,
                content=row["reply_content"],
                status=MessageStatus.complete,
                persona_version=row["reply_persona_version"],
                personality=row["reply_personality"],
                variant=row["reply_variant"],
                reply_to=row["user_message_id"],
                created_at=row["reply_created_at"],
            )
            return Turn(user_message=user_message, replayed=replayed, attempt=row["reply_attempt"]), None
        if outcome == "in_progress":
            raise Conflict(
                "The reply to this Idempotency-Key is still being generated; retry shortly.",
                code=_IN_PROGRESS,
                headers={"Retry-After": "1"},
            )
        new_turn = outcome == "new"
        if not new_turn:  # a retry: the reply had failed, or its worker or lease was gone
            self._metrics.taken_over.inc()
        avatar = await self._persona(user, row, cached_avatar)
        window, cacheable = self._window(row, cached_window, new_turn=new_turn)
        summary_seq, summary = self._summary(row, cached_window)
        generation = _Generation(
            user=user,
            conversation_id=conversation_id,
            reply_id=row["reply_id"],
            attempt=row["reply_attempt"],
            user_message=user_message,
            mode=row["mode"],
            revision=row["revision"],
            avatar=avatar,
            window=window,
            window_cacheable=cacheable,
            summary_seq=summary_seq,
            summary=summary,
            new_turn=new_turn,
            title_unset=row["title_unset"],
        )
        reply = MessageRead(
            id=row["reply_id"],
            conversation_id=conversation_id,
            seq=row["reply_seq"],
            role=MessageRole.assistant,
            content="",
            status=MessageStatus.streaming,
            persona_version=None,
            personality=None,
            variant=row["reply_variant"],
            reply_to=row["user_message_id"],
            created_at=row["reply_created_at"],
        )
        return Turn(user_message=user_message, reply=reply, attempt=row["reply_attempt"]), generation

    async def _persona(self, user: Claims, row: Record, cached: AvatarSnapshot | None) -> AvatarSnapshot:
        """The persona at the version begin_turn saw (G1): the cached snapshot when its stamp
        matched (begin_turn then sends none), else the one begin_turn read, kept for next time."""
        if row["persona_name"] is None:
            assert cached is not None and (cached.id, cached.version) == (
                row["avatar_id"],
                row["avatar_version"],
            )
            self._store.note_avatar(cached=True, matched=True)
            return cached
        avatar = AvatarSnapshot(
            id=row["avatar_id"],
            user_id=user.sub,
            name=row["persona_name"],
            personality=row["persona_personality"],
            backstory=row["persona_backstory"],
            version=row["avatar_version"],
        )
        self._store.note_avatar(cached=cached is not None, matched=False)
        await self._store.put_avatar(avatar)
        return avatar

    def _window(
        self, row: Record, cached: ConversationWindow | None, *, new_turn: bool
    ) -> tuple[tuple[WindowMessage, ...], bool]:
        """Settled messages before this turn, and whether that view may be cached."""
        if self._window_size == 0:
            return (), False
        seqs: list[int] | None = row["window_seqs"]
        if seqs is None:  # the cached window ends exactly where this turn begins
            assert cached is not None
            self._store.note_window(cached=True, matched=True)
            return cached.messages, True
        self._store.note_window(cached=cached is not None, matched=False)
        statuses: list[str] = row["window_statuses"]
        messages = [
            WindowMessage(seq=seq, role=role, content=content)
            for seq, role, content, status in zip(
                seqs, row["window_roles"], row["window_contents"], statuses, strict=True
            )
            if status in _SHOWN_TO_THE_MODEL
        ]
        # Replies still generating (or cut off) are left out; a view that holds one is not
        # cached, since it changes when they settle.
        settled = MessageStatus.streaming not in statuses
        return self._fit(messages), settled and new_turn

    @staticmethod
    def _summary(row: Record, cached: ConversationWindow | None) -> tuple[int | None, str]:
        """The valid summary begin_turn reported: its text as sent, or as this worker has it
        with its window when begin_turn found that one current (then it sends no text)."""
        summary_seq: int | None = row.get("summary_seq")
        if summary_seq is None:
            return None, ""
        content: str | None = row.get("summary_content")
        if content is None:
            assert cached is not None and cached.summary_seq == summary_seq
            content = cached.summary
        return summary_seq, content

    # --- inside the background task: generate, settle, report, then post-commit work -------

    async def _generate(self, g: _Generation, turn: Turn) -> None:
        progress = self._progress(g)
        self._generating[g.reply_id] = progress
        turns = self._metrics.turns
        try:
            try:
                generated = await self._produce(g, turn, progress)
            except asyncio.CancelledError:
                turns["interrupted"].inc()
                raise
            finally:
                await progress.close()  # its last write lands before the reply is settled
                self.stats.partial_saves += progress.saves
            try:
                saved = await self._settle_reliably(g, generated, turn)
            except AppError as exc:
                turns["not_saved"].inc()
                turn.resolve(TurnResult(reply=None, failure=generated.failure, error=generated.error or exc))
                return
            if saved is None:  # stopped from another worker, or a retry took the reply over
                saved = await self._current(g)
            outcome = "superseded" if saved is None else str(saved.status)
            (turns.get(outcome) or turns["failed"]).inc()
            turn.resolve(self._result(generated, saved))
            if saved is not None and saved.status == MessageStatus.complete:
                await self._after_commit(g, saved)
        finally:
            self._generating.pop(g.reply_id, None)
            turn.close(_interrupted())

    def _progress(self, g: _Generation) -> ReplyProgress:
        async def save(content: str | None) -> bool | None:
            return await repository.save_partial(
                self._db,
                g.user,
                reply_id=g.reply_id,
                attempt=g.attempt,
                content=content,
                lease_s=self.lease_s,
            )

        return ReplyProgress(
            g.reply_id,
            save,
            save_after_s=self._save_after_s,
            save_after_chars=self._save_after_chars,
            lease_s=self.lease_s,
        )

    async def _produce(self, g: _Generation, turn: Turn, progress: ReplyProgress) -> _Generated:
        """Stream the reply into `turn` within the turn deadline, until it ends or a stop is
        asked for (checked at every chunk). Every way this can end is recorded in the
        result, never raised, except cancellation (shutdown past its grace period), which
        is saved as `interrupted`."""
        out = _Generated(parts=progress.parts)
        started = 0.0  # when the provider was asked (metrics: first token, whole reply)
        try:
            async with asyncio.timeout(self._deadline_s):
                request = build_request(
                    g.avatar,
                    g.mode,
                    g.window,
                    g.user_message.content,
                    summary=g.summary,
                    summary_seq=g.summary_seq,
                    budget_tokens=self._context_tokens.get(g.mode),
                )
                started = time.perf_counter()
                first = True
                # aclosing: a stop leaves the stream early; the provider must close its
                # connection now, not whenever the generator is collected.
                async with contextlib.aclosing(self._llm.stream(request)) as stream:
                    async for chunk in stream:
                        if first:
                            first = False
                            self._metrics.first_token_seconds.observe(time.perf_counter() - started)
                        progress.add(chunk)
                        turn.push(chunk)
                        if progress.stop_requested or progress.lost:
                            out.stopped = True
                            break
                self._metrics.reply_seconds.observe(time.perf_counter() - started)
        except ProviderFailure as exc:
            out.failure = exc
        except TimeoutError:
            out.failure = ProviderFailure(
                "turn_deadline", "The reply took longer than the turn deadline.", timeout=True
            )
        except AppError as exc:  # the database or the avatar, not the provider: keep it as is
            out.error = exc
        except asyncio.CancelledError:
            await asyncio.shield(self._settle(g, out.content, MessageStatus.interrupted, "shutdown"))
            raise
        except Exception:
            log.exception("reply generation failed")
            out.failure = ProviderFailure("provider_error", "The reply could not be generated.")
        if out.failure is not None:
            self._metrics.provider_failures(out.failure.code).inc()
            if started:
                self._metrics.reply_seconds.observe(time.perf_counter() - started)
        if progress.stop_requested and out.failure is None and out.error is None:
            out.stopped = True  # asked to stop before the first chunk, or after the last
        return out

    async def _current(self, g: _Generation) -> MessageRead | None:
        """The reply as it now is, when this attempt could no longer settle it: stopped
        (reported as such), or taken over (None: the client hears it was superseded)."""
        async with self._db.as_user(g.user) as conn:
            reply = await conversations_repository.get_message(conn, g.conversation_id, g.reply_id)
        if reply is None or reply.status != MessageStatus.stopped:
            return None
        return reply

    @staticmethod
    def _result(generated: _Generated, saved: MessageRead | None) -> TurnResult:
        if generated.error is not None or generated.failure is not None:
            return TurnResult(reply=saved, failure=generated.failure, error=generated.error)
        if saved is None:
            superseded = Conflict("A newer attempt took this reply over.", code="reply_superseded")
            return TurnResult(reply=None, error=superseded)
        return TurnResult(reply=saved)

    async def _after_commit(self, g: _Generation, saved: MessageRead) -> None:
        """finish_turn has returned: the exchange is committed, so this may rely on it."""
        if g.window_cacheable:
            await self._remember_window(g, saved)
        if g.title_unset:
            self.tasks.spawn(self._set_title(g.user, g.conversation_id), name="title")
        # Memory: once more than a window and a half of messages came after the summary,
        # fold the older ones in (keeping half a window of overlap with the recent ones).
        covered = g.summary_seq or 0
        if self._window_size and g.new_turn and saved.seq - covered > self._window_size * 3 // 2:
            target = saved.seq - self._window_size // 2
            self.tasks.spawn(self._summarize(g, covered, target), name="summary")

    async def _settle_reliably(self, g: _Generation, generated: _Generated, turn: Turn) -> MessageRead | None:
        """Save the reply; if the database is away, tell the client at once (503: retry
        with the same key) and keep trying for up to the turn deadline, so a finished
        reply is not thrown away by a database restart (unless a retry took it over)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline_s
        delay = 0.1
        while True:
            try:
                return await self._settle(g, generated.content, generated.status, generated.error_code)
            except ServiceUnavailable as exc:
                turn.resolve(TurnResult(reply=None, failure=generated.failure, error=generated.error or exc))
                if loop.time() + delay > give_up_at:
                    log.error("could not save reply %s within the turn deadline", g.reply_id)
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _settle(
        self, g: _Generation, content: str, status: str, error_code: str | None
    ) -> MessageRead | None:
        row = await repository.finish_turn(
            self._db,
            g.user,
            reply_id=g.reply_id,
            attempt=g.attempt,
            content=content,
            status=status,
            error_code=error_code,
            persona_version=g.avatar.version,
            personality=g.avatar.personality,
        )
        return None if row is None else MessageRead.from_row(row)

    def _fit(self, messages: list[WindowMessage]) -> tuple[WindowMessage, ...]:
        return fit_window(messages, max_messages=self._window_size, max_chars=self._window_chars)

    async def _remember_window(self, g: _Generation, reply: MessageRead) -> None:
        added = (
            WindowMessage(seq=g.user_message.seq, role="user", content=g.user_message.content),
            WindowMessage(seq=reply.seq, role="assistant", content=reply.content),
        )
        messages = self._fit([*g.window, *added])
        await self._store.put_window(
            ConversationWindow(
                g.conversation_id,
                last_seq=reply.seq,
                revision=g.revision,
                messages=messages,
                summary_seq=g.summary_seq,
                summary=g.summary,
            )
        )

    async def _summarize(self, g: _Generation, covered: int, target: int) -> None:
        """Fold the messages in (covered, target] into the summary, made at g.revision. The
        summary is written by one guarded statement at the end: a worker that dies in
        between writes nothing; if history changed meanwhile, nothing is written either."""
        async with self._db.as_user(g.user) as conn:
            rows = await repository.messages_to_summarize(
                conn, g.conversation_id, after_seq=covered, upto_seq=target, limit=_SUMMARY_SOURCE_MESSAGES
            )
        if not rows:
            return
        request = SummaryRequest(
            avatar=g.avatar,
            previous=g.summary,  # "" when there is none
            messages=tuple(
                PromptMessage("user" if r["role"] == "user" else "assistant", r["content"]) for r in rows
            ),
            max_chars=self._summary_chars,
        )
        try:
            content = await self._llm.summarize(request)
        except ProviderFailure as exc:
            self._metrics.provider_failures(exc.code).inc()
            log.warning("could not summarize conversation %s: %s", g.conversation_id, exc.code)
            return
        stored = await repository.save_summary(
            self._db,
            g.user,
            conversation_id=g.conversation_id,
            covers_upto_seq=target,
            revision=g.revision,
            content=content,
        )
        self.stats.summaries_stored += int(stored)

    async def _set_title(self, user: Claims, conversation_id: uuid.UUID) -> None:
        async with self._db.as_user(user) as conn:
            row = await repository.first_exchange(conn, conversation_id)
            if row is None:
                self.stats.title_tasks_without_rows += 1
                log.error("title task found no committed message in %s", conversation_id)
                return
            if row["title"] is None:
                await repository.set_title_if_unset(conn, conversation_id, make_title(row["content"]))
