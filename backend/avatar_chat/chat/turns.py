"""The rules of a chat turn.

1. `begin_turn` (one round trip, one transaction): the user's message is saved with its
   `seq`, a placeholder for the reply is saved as `streaming` with a lease, and the
   avatar's current version plus the conversation's mode, revision and previous seq come
   back. Nothing is held open after it: no connection, no transaction.
2. The persona and the recent window come from the SessionStore only if they match those
   versions exactly; otherwise they are reloaded (G1 holds whatever NOTIFY does).
3. The reply streams from the provider in a tracked background task, so it is saved even
   when the client goes away; `finish_turn` (one round trip) settles it with the persona
   used, as `complete` or `failed` with an error code.
4. Work that needs the committed exchange (the title) starts after step 3 returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from avatar_chat.auth.claims import Claims
from avatar_chat.avatars import repository as avatars_repository
from avatar_chat.chat import mapping, repository
from avatar_chat.chat.prompt import build_request, fit_window
from avatar_chat.chat.schemas import Exchange, MessageRead, MessageStatus
from avatar_chat.core.database import Database
from avatar_chat.core.errors import AppError, Conflict, ProviderError, ProviderTimeout, ServiceUnavailable
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider, ProviderFailure
from avatar_chat.sessions.store import AvatarSnapshot, ConversationWindow, SessionStore, WindowMessage

log = logging.getLogger(__name__)

_TITLE_WORDS = 6
_TITLE_CHARS = 60


def make_title(first_message: str) -> str:
    words = first_message.split()[:_TITLE_WORDS]
    title = " ".join(words) or "New conversation"
    return title if len(title) <= _TITLE_CHARS else title[: _TITLE_CHARS - 1] + "…"


@dataclass(slots=True)
class ChatStats:
    title_tasks_without_rows: int = 0  # G4: must stay 0


@dataclass(slots=True)
class TurnResult:
    """How a generation ended: the reply as saved, or why it is not."""

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
    deltas: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    outcome: asyncio.Future[TurnResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, result: TurnResult) -> None:
        """Tell the client how it went; the first word counts (saving may go on after)."""
        if not self.outcome.done():
            self.outcome.set_result(result)

    async def result(self) -> TurnResult:
        if self.replayed is not None:
            return TurnResult(reply=self.replayed)
        # shield: a client that goes away must not cancel anything (the reply is saved anyway)
        return await asyncio.shield(self.outcome)

    async def exchange(self) -> Exchange:
        reply = (await self.result()).raise_for_failure(self.user_message)
        return Exchange(user_message=self.user_message, assistant_message=reply)

    async def stream(self) -> AsyncIterator[str]:
        """The reply's text as it is generated (the whole text at once for a replay)."""
        if self.replayed is not None:
            yield self.replayed.content
            return
        while (chunk := await self.deltas.get()) is not None:
            yield chunk


@dataclass(slots=True)
class _Generation:
    claims_json: str
    user_id: uuid.UUID
    conversation_id: uuid.UUID
    reply_id: uuid.UUID
    attempt: int
    user_message: MessageRead
    mode: str
    revision: int
    prev_seq: int
    avatar_id: uuid.UUID
    avatar_version: int
    # A new exchange sits right after prev_seq; a retried one does not, so its window
    # is neither served from nor written to the cache.
    new_turn: bool
    title_unset: bool


class ChatService:
    def __init__(
        self,
        db: Database,
        store: SessionStore,
        llm: LLMProvider,
        tasks: TaskTracker,
        settings: Settings,
        *,
        worker_id: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._db = db
        self._worker_id = worker_id
        self._store = store
        self._llm = llm
        self._tasks = tasks
        self._window_size = settings.chat_window_messages
        self._window_chars = settings.chat_window_max_chars
        self._deadline_s = settings.chat_turn_deadline_s
        # Short and renewed while the reply is generated (see _keep_lease): a reply whose
        # worker is gone can be retried within seconds.
        self._lease_s = settings.chat_reply_lease_s
        self.stats = ChatStats()

    async def send(
        self, user: Claims, conversation_id: uuid.UUID, content: str, *, idempotency_key: str | None
    ) -> Turn:
        """Accept a send. The whole turn runs in a tracked task: a client that goes away
        right after sending (an app sent to the background) still gets its reply saved,
        instead of leaving a committed message whose reply nobody generates."""
        accepted: asyncio.Future[Turn] = asyncio.get_running_loop().create_future()
        # Retrieved here so that an answer nobody waits for any more is not reported as lost.
        accepted.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._tasks.spawn(self._run(user, conversation_id, content, idempotency_key, accepted), name="turn")
        return await asyncio.shield(accepted)

    async def _run(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        content: str,
        idempotency_key: str | None,
        accepted: asyncio.Future[Turn],
    ) -> None:
        try:
            turn, generation = await self._begin(user, conversation_id, content, idempotency_key)
        except Exception as exc:  # AppError for the client; anything else it sees as a 500
            accepted.set_exception(exc)
            return
        except asyncio.CancelledError:  # shutdown before the turn began
            accepted.set_exception(ServiceUnavailable("Shutting down; retry.", code="shutting_down"))
            raise
        accepted.set_result(turn)
        if generation is not None:
            await self._generate(generation, turn)

    async def _begin(
        self, user: Claims, conversation_id: uuid.UUID, content: str, idempotency_key: str | None
    ) -> tuple[Turn, _Generation | None]:
        claims_json = user.as_json()
        async with self._db.connection() as conn:
            row = await repository.begin_turn(
                conn,
                claims_json=claims_json,
                conversation_id=conversation_id,
                content=content,
                idempotency_key=idempotency_key,
                lease_s=self._lease_s,
                worker_id=self._worker_id(),
            )
        user_message = mapping.message(row["user_message"])
        reply = mapping.message(row["reply"])
        outcome: str = row["outcome"]
        if outcome == "replay":
            return Turn(user_message=user_message, replayed=reply), None
        if outcome == "in_progress":
            raise Conflict(
                "The reply to this Idempotency-Key is still being generated; retry shortly.",
                code="send_in_progress",
                headers={"Retry-After": "1"},
            )
        generation = _Generation(
            claims_json=claims_json,
            user_id=user.sub,
            conversation_id=conversation_id,
            reply_id=reply.id,
            attempt=row["reply"]["attempt"],
            user_message=user_message,
            mode=row["mode"],
            revision=row["revision"],
            prev_seq=row["prev_seq"],
            avatar_id=row["avatar_id"],
            avatar_version=row["avatar_version"],
            new_turn=outcome == "new",
            title_unset=row["title"] is None,
        )
        return Turn(user_message=user_message), generation

    # --- inside the background task ------------------------------------------------------

    async def _generate(self, g: _Generation, turn: Turn) -> None:
        parts: list[str] = []
        avatar: AvatarSnapshot | None = None
        failure: ProviderFailure | None = None
        window: tuple[WindowMessage, ...] = ()
        settled = False
        generated = asyncio.Event()
        # Most replies finish within a third of the lease: they only cost this timer.
        renewals = asyncio.get_running_loop().call_later(
            self._lease_s / 3,
            lambda: self._tasks.spawn(self._keep_lease(g, generated), name=f"lease-{g.reply_id}"),
        )
        try:
            try:
                async with asyncio.timeout(self._deadline_s):
                    avatar = await self._avatar(g)
                    window, settled = await self._window(g)
                    request = build_request(avatar, g.mode, window, g.user_message.content)
                    async for chunk in self._llm.stream(request):
                        parts.append(chunk)
                        turn.deltas.put_nowait(chunk)
            except ProviderFailure as exc:
                failure = exc
            except TimeoutError:
                failure = ProviderFailure(
                    "turn_deadline", "The reply took longer than the turn deadline.", timeout=True
                )
            except AppError as exc:
                failure = ProviderFailure(exc.code, exc.message)
            except asyncio.CancelledError:
                # Shutdown ran past its grace period: say what happened, then stop.
                await asyncio.shield(
                    self._settle(g, avatar, "".join(parts), MessageStatus.interrupted, "shutdown")
                )
                raise
            except Exception:
                log.exception("reply generation failed")
                failure = ProviderFailure("provider_error", "The reply could not be generated.")
            generated.set()
            renewals.cancel()
            status = MessageStatus.complete if failure is None else MessageStatus.failed
            try:
                saved = await self._settle_reliably(
                    g, avatar, "".join(parts), status, failure.code if failure else None, turn
                )
            except AppError as exc:
                turn.resolve(TurnResult(reply=None, failure=failure, error=exc))
                return
            if failure is not None:
                turn.resolve(TurnResult(reply=saved, failure=failure))
                return
            if saved is None:
                superseded = Conflict("A newer attempt took this reply over.", code="reply_superseded")
                turn.resolve(TurnResult(reply=None, error=superseded))
                return
            turn.resolve(TurnResult(reply=saved))
            if g.new_turn and settled and avatar is not None:
                await self._remember_window(g, window, saved)
            if g.title_unset:
                # Post-commit work: finish_turn has returned, so the exchange is committed.
                self._tasks.spawn(self._set_title(g.claims_json, g.conversation_id), name="title")
        finally:
            generated.set()
            renewals.cancel()
            interrupted = ServiceUnavailable(
                "The reply was interrupted; retry with the same Idempotency-Key.", code="reply_interrupted"
            )
            turn.resolve(TurnResult(reply=None, error=interrupted))
            turn.deltas.put_nowait(None)

    async def _settle_reliably(
        self,
        g: _Generation,
        avatar: AvatarSnapshot | None,
        content: str,
        status: str,
        error_code: str | None,
        turn: Turn,
    ) -> MessageRead | None:
        """Save the reply; if the database is away, tell the client at once (503: retry
        with the same key) and keep trying for up to the turn deadline, so a finished
        reply is not thrown away by a database restart (unless a retry took it over)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline_s
        delay = 0.1
        while True:
            try:
                return await self._settle(g, avatar, content, status, error_code)
            except ServiceUnavailable as exc:
                turn.resolve(TurnResult(reply=None, error=exc))
                if loop.time() + delay > give_up_at:
                    log.error("could not save reply %s within the turn deadline", g.reply_id)
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _keep_lease(self, g: _Generation, generated: asyncio.Event) -> None:
        """Renew the reply's lease now and every third of it until `generated` is set.
        Waiting on the event (not being cancelled) means a renewal is never cut mid-query."""
        while not generated.is_set():
            try:
                async with self._db.connection() as conn:
                    ours = await repository.extend_lease(
                        conn,
                        claims_json=g.claims_json,
                        reply_id=g.reply_id,
                        attempt=g.attempt,
                        lease_s=self._lease_s,
                    )
                if not ours:
                    return
            except AppError as exc:
                log.warning("could not extend the lease of reply %s: %s", g.reply_id, exc.code)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lease_s / 3):
                    await generated.wait()

    async def _settle(
        self,
        g: _Generation,
        avatar: AvatarSnapshot | None,
        content: str,
        status: str,
        error_code: str | None,
    ) -> MessageRead | None:
        async with self._db.connection() as conn:
            row = await repository.finish_turn(
                conn,
                claims_json=g.claims_json,
                reply_id=g.reply_id,
                attempt=g.attempt,
                content=content,
                status=status,
                error_code=error_code,
                persona_version=avatar.version if avatar else None,
                personality=avatar.personality if avatar else None,
            )
        return None if row is None else mapping.message(row)

    async def _avatar(self, g: _Generation) -> AvatarSnapshot:
        async def load() -> AvatarSnapshot | None:
            async with self._db.as_user(g.claims_json) as conn:
                row = await avatars_repository.get_mine(conn)
            if row is None:
                return None
            return AvatarSnapshot(
                id=row["id"],
                user_id=row["user_id"],
                name=row["name"],
                personality=row["personality"],
                backstory=row["backstory"],
                version=row["version"],
            )

        avatar = await self._store.avatar(
            g.user_id, avatar_id=g.avatar_id, version=g.avatar_version, load=load
        )
        if avatar is None:
            raise Conflict("Create your avatar first (POST /avatars/me).", code="avatar_required")
        return avatar

    async def _window(self, g: _Generation) -> tuple[tuple[WindowMessage, ...], bool]:
        """Settled messages before this turn; and whether that view may be cached."""
        if self._window_size == 0:
            return (), True
        if g.new_turn:
            cached = await self._store.window(g.conversation_id, last_seq=g.prev_seq, revision=g.revision)
            if cached is not None:
                return cached.messages, True
        async with self._db.as_user(g.claims_json) as conn:
            rows = await repository.load_window(
                conn, g.conversation_id, upto_seq=g.prev_seq, limit=self._window_size
            )
        # Replies still generating (or cut off) are left out; a view that holds one is not
        # cached, since it changes when they settle.
        settled = all(r["status"] != MessageStatus.streaming for r in rows)
        messages = self._fit(
            [
                WindowMessage(seq=r["seq"], role=r["role"], content=r["content"])
                for r in reversed(rows)
                if r["status"] == MessageStatus.complete
            ]
        )
        return messages, settled and g.new_turn

    def _fit(self, messages: list[WindowMessage]) -> tuple[WindowMessage, ...]:
        return fit_window(messages, max_messages=self._window_size, max_chars=self._window_chars)

    async def _remember_window(
        self, g: _Generation, window: tuple[WindowMessage, ...], reply: MessageRead
    ) -> None:
        added = (
            WindowMessage(seq=g.user_message.seq, role="user", content=g.user_message.content),
            WindowMessage(seq=reply.seq, role="assistant", content=reply.content),
        )
        messages = self._fit([*window, *added])
        await self._store.put_window(
            ConversationWindow(g.conversation_id, last_seq=reply.seq, revision=g.revision, messages=messages)
        )

    async def _set_title(self, claims_json: str, conversation_id: uuid.UUID) -> None:
        async with self._db.as_user(claims_json) as conn:
            row = await repository.first_exchange(conn, conversation_id)
            if row is None:
                self.stats.title_tasks_without_rows += 1
                log.error("title task found no committed message in %s", conversation_id)
                return
            if row["title"] is None:
                await repository.set_title_if_unset(conn, conversation_id, make_title(row["content"]))
