"""Generating a reply, in the turn's background task: the provider's stream into the turn
within the turn deadline, its text saved as it grows while someone follows it or asks to
stop it (chat.progress, chat.demand) so any worker can resume or stop it, then the reply
settled in one round trip (finish_turn) with the persona used, as `complete`, `stopped` or
`failed` with a code, retried while the database is busy or away. A complete reply then
goes to the memory's post-commit work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from avatar_chat.chat import repository
from avatar_chat.chat.context import ChatContext
from avatar_chat.chat.demand import GeneratingReplies
from avatar_chat.chat.memory import Memory
from avatar_chat.chat.moderation import Moderation, ReplyCheck
from avatar_chat.chat.plan import TurnPlan
from avatar_chat.chat.progress import ReplyProgress
from avatar_chat.chat.prompt import build_request
from avatar_chat.chat.turn import Turn, TurnResult
from avatar_chat.conversations import repository as conversations_repository
from avatar_chat.conversations.schemas import MessageRead, MessageStatus
from avatar_chat.core.errors import AppError, Conflict, DatabaseBusy, ServiceUnavailable
from avatar_chat.llm.base import ChatRequest, ProviderFailure
from avatar_chat.usage.records import usage_entry

log = logging.getLogger(__name__)


def _interrupted() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The reply was interrupted; retry with the same Idempotency-Key.", code="reply_interrupted"
    )


@dataclass(slots=True)
class ReplyDraft:
    """What the provider's stream produced: the text, and how it ended."""

    parts: list[str] = field(default_factory=list)
    failure: ProviderFailure | None = None  # the provider could not reply
    error: AppError | None = None  # something else stopped the turn; the client gets it as is
    stopped: bool = False  # a client asked to stop: the text so far is the reply
    # Moderation of the reply (chat.moderation): its text is replaced by `filtered_text`
    # when it was flagged; `moderation` is what finish_turn records.
    filtered_text: str | None = None
    moderation: dict[str, Any] | None = None
    # What the attempt cost (usage records): the model call, its moderation.
    usage: list[dict[str, Any]] = field(default_factory=list)

    @property
    def content(self) -> str:
        return self.filtered_text if self.filtered_text is not None else "".join(self.parts)

    @property
    def status(self) -> MessageStatus:
        if self.error_code is not None:
            return MessageStatus.failed
        if self.filtered_text is not None:
            return MessageStatus.filtered
        return MessageStatus.stopped if self.stopped else MessageStatus.complete

    @property
    def error_code(self) -> str | None:
        if self.error is not None:
            return self.error.code
        return None if self.failure is None else self.failure.code


class ReplyGenerator:
    def __init__(
        self, context: ChatContext, memory: Memory, generating: GeneratingReplies, moderation: Moderation
    ) -> None:
        settings = context.settings
        self._moderation = moderation
        self._db = context.db
        self._llm = context.llm
        self._memory = memory
        self._metrics = context.metrics
        self._stats = context.stats
        self._deadline_s = settings.chat_turn_deadline_s
        # How long the database may be unreachable at the end of a reply before its client
        # is told (a busy pool is waited for without telling anyone: it will free up).
        self._outage_patience_s = settings.db_acquire_timeout_s
        self._lease_s = settings.chat_reply_lease_s
        self._save_after_s = settings.chat_partial_save_ms / 1000
        self._save_after_chars = settings.chat_partial_save_chars
        self._context_tokens = {
            "assistant": settings.chat_context_tokens_assistant,
            "companion": settings.chat_context_tokens_companion,
        }
        # Replies this worker is generating: a stop or a follower reaches them there.
        self._generating = generating

    async def run(self, plan: TurnPlan, turn: Turn) -> None:
        """Generate, settle, tell the client, then the post-commit work."""
        progress = self._progress(plan)
        self._generating.add(progress)
        turns = self._metrics.turns
        try:
            try:
                draft = await self._produce(plan, turn, progress)
            except asyncio.CancelledError:
                turns["interrupted"].inc()
                raise
            finally:
                await progress.close()  # its last write lands before the reply is settled
                self._stats.partial_saves += progress.saves
            try:
                saved = await self._settle_reliably(plan, draft, turn)
            except AppError as exc:
                turns["not_saved"].inc()
                turn.resolve(TurnResult(reply=None, failure=draft.failure, error=draft.error or exc))
                return
            if saved is None:  # stopped from another worker, or a retry took the reply over
                saved = await self._current(plan)
            outcome = "superseded" if saved is None else str(saved.status)
            (turns.get(outcome) or turns["failed"]).inc()
            turn.resolve(self._result(draft, saved))
            if saved is not None and saved.status == MessageStatus.complete:
                await self._memory.after_commit(plan, saved)
        finally:
            self._generating.discard(plan.reply_id)
            turn.close(_interrupted())

    def _progress(self, plan: TurnPlan) -> ReplyProgress:
        async def save(content: str) -> bool | None:
            return await repository.save_partial(
                self._db,
                plan.user,
                reply_id=plan.reply_id,
                attempt=plan.attempt,
                content=content,
                lease_s=self._lease_s,
            )

        return ReplyProgress(
            plan.reply_id,
            save,
            save_after_s=self._save_after_s,
            save_after_chars=self._save_after_chars,
            attempt=plan.attempt,
            demanded=plan.worker_id is None,  # nobody can find it by worker (chat.demand)
        )

    async def _produce(self, plan: TurnPlan, turn: Turn, progress: ReplyProgress) -> ReplyDraft:
        """Stream the reply into `turn` within the turn deadline, until it ends or a stop is
        asked for (checked at every chunk). Every way this can end is recorded in the
        result, never raised, except cancellation (shutdown past its grace period), which
        is saved as `interrupted`."""
        out = ReplyDraft(parts=progress.parts)
        # Moderation out: text goes to the client and the database only once checked.
        check = self._moderation.reply_check(minor=plan.minor)
        started = 0.0  # when the provider was asked (metrics: first token, whole reply)
        request: ChatRequest | None = None
        received = 0  # characters the provider sent (what the reply cost, when it says nothing)
        try:
            async with asyncio.timeout(self._deadline_s):
                request = build_request(
                    plan.avatar,
                    plan.mode,
                    plan.window,
                    plan.user_message.content,
                    summary=plan.summary,
                    summary_seq=plan.summary_seq,
                    budget_tokens=self._context_tokens.get(plan.mode),
                    model=plan.model,
                    max_tokens=plan.max_tokens,
                )
                started = time.perf_counter()
                first = True
                # aclosing: a stop leaves the stream early; the provider must close its
                # connection now, not whenever the generator is collected.
                async with contextlib.aclosing(self._llm.stream(request)) as stream:
                    async for chunk in stream:
                        received += len(chunk)
                        if first:
                            first = False
                            self._metrics.first_token_seconds.observe(time.perf_counter() - started)
                        if check is not None:
                            taken = check.take(chunk)  # no coroutine unless a check is due
                            chunk = await check.checked() if taken is None else taken
                            if check.flagged is not None:
                                break
                        if chunk:
                            progress.add(chunk)
                            turn.push(chunk)
                        if progress.stop_requested or progress.lost:
                            out.stopped = True
                            break
                self._metrics.reply_seconds.observe(time.perf_counter() - started)
                if check is not None and check.flagged is None:
                    # The whole reply, once: what is still held back goes out if it passes.
                    rest = await check.finish()
                    if rest:
                        progress.add(rest)
                        turn.push(rest)
        except ProviderFailure as exc:
            out.failure = exc
        except TimeoutError:
            out.failure = ProviderFailure(
                "turn_deadline", "The reply took longer than the turn deadline.", timeout=True
            )
        except AppError as exc:  # the database or the avatar, not the provider: keep it as is
            out.error = exc
        except asyncio.CancelledError:
            usage = self._spent(plan, request, received, MessageStatus.interrupted, check)
            await asyncio.shield(
                self._settle(plan, out.content, MessageStatus.interrupted, "shutdown", usage=usage)
            )
            raise
        except Exception:
            log.exception("reply generation failed")
            out.failure = ProviderFailure("provider_error", "The reply could not be generated.")
        if check is not None:
            if check.flagged is not None:
                out.filtered_text = self._moderation.policy.filtered_text
            out.moderation = check.finished()
        if out.failure is not None:
            self._metrics.provider_failures(out.failure.code).inc()
            if started:
                self._metrics.reply_seconds.observe(time.perf_counter() - started)
        if progress.stop_requested and out.failure is None and out.error is None:
            out.stopped = True  # asked to stop before the first chunk, or after the last
        out.usage = self._spent(plan, request, received, out.status, check)
        return out

    def _spent(
        self,
        plan: TurnPlan,
        request: ChatRequest | None,
        received: int,
        status: str,
        check: ReplyCheck | None,
    ) -> list[dict[str, Any]]:
        """What the attempt cost, counted in the metrics: the model call (the provider's
        figures, else estimated from the prompt and the text it sent; nothing when it sent
        nothing and reported nothing) and the reply's moderation calls."""
        entries: list[dict[str, Any]] = []
        if request is not None and (received or request.usage.reported is not None):
            reported = request.usage.reported
            entries.append(
                usage_entry(
                    "reply",
                    self._llm.model_of(request.model),
                    plan.plan_name,
                    reported=None
                    if reported is None
                    else (reported.prompt_tokens, reported.completion_tokens),
                    prompt_chars=sum(len(m.content) for m in request.messages),
                    completion_chars=received,
                    status=str(status),
                )
            )
        if check is not None and (moderation := check.spend.entry(plan.plan_name)) is not None:
            entries.append(moderation)
        self._metrics.usage.count(entries)
        return entries

    async def _current(self, plan: TurnPlan) -> MessageRead | None:
        """The reply as it now is, when this attempt could no longer settle it: stopped
        (reported as such), or taken over (None: the client hears it was superseded)."""
        async with self._db.as_user(plan.user) as conn:
            reply = await conversations_repository.get_message(conn, plan.conversation_id, plan.reply_id)
        if reply is None or reply.status != MessageStatus.stopped:
            return None
        return reply

    @staticmethod
    def _result(draft: ReplyDraft, saved: MessageRead | None) -> TurnResult:
        if draft.error is not None or draft.failure is not None:
            return TurnResult(reply=saved, failure=draft.failure, error=draft.error)
        if saved is None:
            superseded = Conflict("A newer attempt took this reply over.", code="reply_superseded")
            return TurnResult(reply=None, error=superseded)
        return TurnResult(reply=saved)

    async def _settle_reliably(self, plan: TurnPlan, draft: ReplyDraft, turn: Turn) -> MessageRead | None:
        """Save the reply, retrying for up to the turn deadline so a finished reply is not
        thrown away (unless a retry took it over). A busy pool is only waited for: the
        client hears how the reply ended once it is saved. Only a database unreachable for
        longer than DB_ACQUIRE_TIMEOUT_S is reported to the client (503: retry with the
        same key, which answers the reply once this saves it)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline_s
        unreachable_since: float | None = None
        delay = 0.1
        while True:
            try:
                return await self._settle(
                    plan, draft.content, draft.status, draft.error_code, draft.moderation, draft.usage
                )
            except DatabaseBusy:
                unreachable_since = None
            except ServiceUnavailable as exc:
                now = loop.time()
                unreachable_since = now if unreachable_since is None else unreachable_since
                if now - unreachable_since >= self._outage_patience_s:
                    turn.resolve(TurnResult(reply=None, failure=draft.failure, error=draft.error or exc))
            if loop.time() + delay > give_up_at:
                log.error("could not save reply %s within the turn deadline", plan.reply_id)
                raise ServiceUnavailable("The reply could not be saved.", code="database_unavailable")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _settle(
        self,
        plan: TurnPlan,
        content: str,
        status: str,
        error_code: str | None,
        moderation: dict[str, Any] | None = None,
        usage: list[dict[str, Any]] | None = None,
    ) -> MessageRead | None:
        row = await repository.finish_turn(
            self._db,
            plan.user,
            reply_id=plan.reply_id,
            attempt=plan.attempt,
            content=content,
            status=status,
            error_code=error_code,
            persona_version=plan.avatar.version,
            personality=plan.avatar.personality,
            moderation=moderation,
            usage=usage,
        )
        return None if row is None else MessageRead.from_row(row)
