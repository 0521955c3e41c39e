"""What a conversation remembers between turns: the recent window the model is given, and
the summary of what came before it. (The title is set by begin_turn, from the first
message, in the transaction that saves it.)

A turn reads its window and summary from begin_turn's answer, or from the SessionStore
when begin_turn found the cached ones current (`window`, `summary`). Once the reply is
committed, `after_commit` caches the new window and starts the summary as
tracked background work, so they rely only on committed rows (G4).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from avatar_chat.chat import repository
from avatar_chat.chat.context import ChatContext
from avatar_chat.chat.plan import TurnPlan
from avatar_chat.chat.window import SHOWN_TO_THE_MODEL, ConversationWindow, WindowMessage, fit_window
from avatar_chat.conversations.schemas import MessageRead, MessageRole, MessageStatus
from avatar_chat.core.database import Record
from avatar_chat.llm.base import PromptMessage, ProviderFailure, SummaryRequest
from avatar_chat.usage.records import usage_entry

log = logging.getLogger(__name__)

# At most this many messages are folded into a summary at once (the newest of them).
_SUMMARY_SOURCE_MESSAGES = 200
# A summary's claim lasts this long past the provider's deadline (a worker that dies
# releases it sooner: its liveness row expires).
_SUMMARY_LEASE_MARGIN_S = 10.0


class Memory:
    def __init__(self, context: ChatContext) -> None:
        self._db = context.db
        self._store = context.store
        self._llm = context.llm
        self._tasks = context.tasks
        self._window_size = context.settings.chat_window_messages
        self._window_chars = context.settings.chat_window_max_chars
        self._summary_chars = context.settings.chat_summary_max_chars
        self._summary_lease_s = 2 * context.settings.llm_timeout_s + _SUMMARY_LEASE_MARGIN_S
        self._metrics = context.metrics
        self._stats = context.stats

    # --- read when a turn is admitted -------------------------------------------------------

    def window(
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
            if status in SHOWN_TO_THE_MODEL and role != MessageRole.notice  # notices are the operator's words
        ]
        # Replies still generating (or cut off) are left out; a view that holds one is not
        # cached, since it changes when they settle.
        settled = MessageStatus.streaming not in statuses
        return self._fit(messages), settled and new_turn

    @staticmethod
    def summary(row: Record, cached: ConversationWindow | None) -> tuple[int | None, str]:
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

    def _fit(self, messages: list[WindowMessage]) -> tuple[WindowMessage, ...]:
        return fit_window(messages, max_messages=self._window_size, max_chars=self._window_chars)

    # --- after the reply is committed -------------------------------------------------------

    async def after_commit(self, plan: TurnPlan, saved: MessageRead) -> None:
        """finish_turn has returned: the exchange is committed, so this may rely on it."""
        if plan.window_cacheable:
            await self._remember_window(plan, saved)
        # Once more than a window and a half of messages came after the summary, fold the
        # older ones in (keeping half a window of overlap with the recent ones).
        covered = plan.summary_seq or 0
        if self._window_size and plan.new_turn and saved.seq - covered > self._window_size * 3 // 2:
            target = saved.seq - self._window_size // 2
            self._tasks.spawn(self._summarize(plan, covered, target), name="summary")

    async def _remember_window(self, plan: TurnPlan, reply: MessageRead) -> None:
        added = (
            WindowMessage(seq=plan.user_message.seq, role="user", content=plan.user_message.content),
            WindowMessage(seq=reply.seq, role="assistant", content=reply.content),
        )
        messages = self._fit([*plan.window, *added])
        await self._store.put_window(
            ConversationWindow(
                plan.conversation_id,
                last_seq=reply.seq,
                revision=plan.revision,
                messages=messages,
                summary_seq=plan.summary_seq,
                summary=plan.summary,
            )
        )

    async def _summarize(self, plan: TurnPlan, covered: int, target: int) -> None:
        """Fold the messages in (covered, target] into the summary, made at plan.revision. The
        summary is written by one guarded statement at the end: a worker that dies in
        between writes nothing; if history changed meanwhile, nothing is written either.

        One at a time per conversation, across workers: begin_summary claims it (with a
        lease, or until this worker's liveness row expires) in the round trip that reads the
        messages. When another summary of it runs, this one does not start; the next turn
        that finds a summary due asks again."""
        claimed = await repository.begin_summary(
            self._db,
            plan.user,
            conversation_id=plan.conversation_id,
            after_seq=covered,
            upto_seq=target,
            limit=_SUMMARY_SOURCE_MESSAGES,
            worker_id=plan.worker_id,
            lease_s=self._summary_lease_s,
        )
        if claimed is None:
            self._stats.summaries_skipped += 1
            return
        claim, rows = claimed
        request = self._request(plan, rows)
        try:
            if request is not None:
                await self._fold(plan, target, request)
        finally:
            await repository.end_summary(
                self._db,
                conversation_id=plan.conversation_id,
                claim=claim,
                user_id=plan.user.sub,
                usage=None if request is None else self._spent(plan, request),
            )

    def _spent(self, plan: TurnPlan, request: SummaryRequest) -> list[dict[str, Any]]:
        """What the summary cost (usage records): the provider's figures, else estimated
        from what it was sent and, when it answered, the summary."""
        reported = request.usage.reported
        answered = request.usage.answered_chars
        if reported is None and answered is None:
            return []  # the provider answered nothing: nothing is known to be spent
        entries = [
            usage_entry(
                "summary",
                self._llm.model_of(request.model),
                plan.plan_name,
                reported=None if reported is None else (reported.prompt_tokens, reported.completion_tokens),
                prompt_chars=len(request.previous) + sum(len(m.content) for m in request.messages),
                completion_chars=answered or 0,
            )
        ]
        self._metrics.usage.count(entries)
        return entries

    def _request(self, plan: TurnPlan, rows: list[tuple[int, str, str]]) -> SummaryRequest | None:
        if not rows:
            return None
        return SummaryRequest(
            avatar=plan.avatar,
            previous=plan.summary,  # "" when there is none
            messages=tuple(
                PromptMessage("user" if role == "user" else "assistant", content) for _, role, content in rows
            ),
            max_chars=self._summary_chars,
            model=plan.model,
        )

    async def _fold(self, plan: TurnPlan, target: int, request: SummaryRequest) -> None:
        try:
            # The provider's own deadlines end it sooner; this keeps it within its claim.
            async with asyncio.timeout(self._summary_lease_s - _SUMMARY_LEASE_MARGIN_S):
                content = await self._llm.summarize(request)
            request.usage.answered_chars = len(content)
        except ProviderFailure as exc:
            self._metrics.provider_failures(exc.code).inc()
            log.warning("could not summarize conversation %s: %s", plan.conversation_id, exc.code)
            return
        except TimeoutError:
            log.warning("could not summarize conversation %s: timed out", plan.conversation_id)
            return
        stored = await repository.save_summary(
            self._db,
            plan.user,
            conversation_id=plan.conversation_id,
            covers_upto_seq=target,
            revision=plan.revision,
            content=content,
        )
        self._stats.summaries_stored += int(stored)
