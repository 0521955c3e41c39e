"""Admitting a turn: a send, regenerate or edit becomes a turn plan.

begin_turn (or begin_regenerate) commits the user's message and a placeholder reply in
one round trip and answers with the avatar's current version and the conversation's mode,
revision and window. The persona and the window come from the SessionStore only if they
match those versions exactly, else from that answer (G1). Out come the `Turn` the router
answers with and the `TurnPlan` the generation follows (None for a replayed key).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from avatar_chat.avatars.persona import AvatarSnapshot, PersonalityType
from avatar_chat.chat import repository
from avatar_chat.chat.context import ChatContext
from avatar_chat.chat.memory import Memory
from avatar_chat.chat.moderation import Moderation, Verdict
from avatar_chat.chat.plan import TurnPlan
from avatar_chat.chat.turn import Turn
from avatar_chat.chat.window import ConversationWindow
from avatar_chat.conversations.schemas import MessageRead, MessageRole, MessageStatus, NoticeKind
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Record
from avatar_chat.core.errors import Conflict, TooManyRequests, ValidationFailed
from avatar_chat.usage.records import ModerationSpend

_IN_PROGRESS = "send_in_progress"

Admitted = tuple[Turn, TurnPlan | None]


class Admission:
    def __init__(
        self,
        context: ChatContext,
        memory: Memory,
        moderation: Moderation,
        *,
        worker_id: Callable[[], int | None],
    ) -> None:
        self._db = context.db
        self._moderation = moderation
        self._store = context.store
        self._memory = memory
        self._worker_id = worker_id
        self._metrics = context.metrics
        self._window_size = context.settings.chat_window_messages
        self._default_model = context.settings.llm_model
        # Short and renewed while the reply is generated (chat.demand): a reply whose
        # worker is gone can be retried within seconds.
        self._lease_s = context.settings.chat_reply_lease_s

    async def begin(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        content: str,
        idempotency_key: str | None,
        accept_language: str | None = None,
    ) -> Admitted:
        # Moderation in, before anything is written or the model asked (docs/safety.md);
        # begin_turn writes what its verdict implies in the same round trip.
        spend = ModerationSpend()
        verdict = await self._moderation.check(content, "in", spend=spend)
        safety = (
            None
            if self._moderation.moderator is None and not self._moderation.policy.notices_on
            else self._moderation.policy.turn_parameters(verdict, accept_language)
        )
        moderation_usage = spend.entry(None)  # its plan is the one begin_turn reads
        if safety is not None and moderation_usage is not None:
            safety["usage"] = [moderation_usage]
        cached_avatar, cached_window = await self._store.for_turn(user.sub, conversation_id)
        worker_id = self._worker_id()
        row = await repository.begin_turn(
            self._db,
            user,
            conversation_id=conversation_id,
            content=content,
            idempotency_key=idempotency_key,
            lease_s=self._lease_s,
            worker_id=worker_id,
            known_avatar=(cached_avatar.id, cached_avatar.version) if cached_avatar else None,
            known_window=(
                (cached_window.last_seq, cached_window.revision, cached_window.summary_seq)
                if cached_window
                else None
            ),
            window_limit=self._window_size,
            safety=safety,
        )
        if moderation_usage is not None and row["outcome"] in ("new", "blocked", "notice"):
            self._metrics.usage.count([moderation_usage])
        self._moderation.count_notices(
            row["notice_kinds"] if row["outcome"] in ("new", "blocked", "notice") else []
        )
        if row["outcome"] == "blocked":
            raise message_blocked(verdict, row["user_message_id"])
        # A replayed key has the same content: begin_turn checked it.
        return await self._accepted(
            user, conversation_id, row, content, cached_avatar, cached_window, worker_id
        )

    async def begin_regenerate(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        new_content: str | None,
        idempotency_key: str | None,
        accept_language: str | None = None,
    ) -> Admitted:
        spend = ModerationSpend()
        if new_content is not None:
            await self._check_edit(user, conversation_id, message_id, new_content, accept_language, spend)
        moderation_usage = spend.entry(None)  # its plan is the one begin_regenerate reads
        cached_avatar, _ = await self._store.for_turn(user.sub, conversation_id)
        worker_id = self._worker_id()
        row = await repository.begin_regenerate(
            self._db,
            user,
            conversation_id=conversation_id,
            message_id=message_id,
            new_content=new_content,
            idempotency_key=idempotency_key,
            lease_s=self._lease_s,
            worker_id=worker_id,
            known_avatar=(cached_avatar.id, cached_avatar.version) if cached_avatar else None,
            window_limit=self._window_size,
            usage=None if moderation_usage is None else [moderation_usage],
        )
        if moderation_usage is not None:
            self._metrics.usage.count([moderation_usage])
        return await self._accepted(
            user, conversation_id, row, row["user_content"], cached_avatar, None, worker_id
        )

    async def _check_edit(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        message_id: uuid.UUID,
        content: str,
        accept_language: str | None,
        spend: ModerationSpend,
    ) -> None:
        """An edit moderation refuses is not applied (422 message_blocked), and it is held to
        the stricter of the two policies (a minor's): whether the user is a minor is only
        known in the database. A crisis is answered with the crisis notice in the error's
        details, and recorded."""
        verdict = await self._moderation.check(content, "in", spend=spend)
        if verdict is None or not (verdict.refuses(True) or verdict.unchecked):
            return
        crisis = verdict.minor_crisis
        await repository.record_refusal(
            self._db,
            user,
            conversation_id=conversation_id,
            message_id=message_id,
            action="unchecked" if verdict.unchecked else "crisis" if crisis else "block",
            categories=list(verdict.categories),
            provider=verdict.provider,
        )
        if verdict.unchecked:
            return
        if crisis:
            self._moderation.count_notices(["crisis"])
        raise message_blocked(
            verdict,
            message_id,
            crisis_notice=self._moderation.policy.crisis_text(accept_language) if crisis else None,
        )

    def count_refused(self, exc: Exception) -> None:
        """A turn begin_turn refused (or that failed before it answered), by why."""
        if isinstance(exc, Conflict) and exc.code == _IN_PROGRESS:
            self._metrics.turns["in_progress"].inc()
            return
        self._metrics.turns["refused"].inc()
        if isinstance(exc, TooManyRequests):
            refusals = self._metrics.rate_limited
            (refusals.get(exc.code) or refusals["rate_limited"]).inc()

    async def _accepted(
        self,
        user: Claims,
        conversation_id: uuid.UUID,
        row: Record,
        user_content: str,
        cached_avatar: AvatarSnapshot | None,
        cached_window: ConversationWindow | None,
        worker_id: int | None,
    ) -> Admitted:
        """What begin_turn or begin_regenerate answered, as the turn the router gets and
        the plan of the generation to run (None for a replay)."""
        user_message = _user_message(row, conversation_id, user_content)
        notices = _notices(row, conversation_id)
        outcome: str = row["outcome"]
        if outcome == "notice":  # a crisis notice in place of a reply: nothing to generate
            return Turn(user_message=user_message, notices=notices), None
        if outcome == "replay":
            replayed = _reply(
                row,
                conversation_id,
                row["reply_content"],
                MessageStatus.complete,
                row["reply_persona_version"],
                row["reply_personality"],
            )
            return (
                Turn(
                    user_message=user_message,
                    replayed=replayed,
                    attempt=row["reply_attempt"],
                    notices=notices,
                ),
                None,
            )
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
        window, cacheable = self._memory.window(row, cached_window, new_turn=new_turn)
        summary_seq, summary = self._memory.summary(row, cached_window)
        plan = TurnPlan(
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
            worker_id=worker_id,
            minor=bool(row["minor"]),
            plan_name=row["plan_name"],
            model=self._model(row["plan_models"]),
            max_tokens=row["plan_max_reply_tokens"],
        )
        reply = _reply(row, conversation_id, "", MessageStatus.streaming)
        return Turn(
            user_message=user_message, reply=reply, attempt=row["reply_attempt"], notices=notices
        ), plan

    def _model(self, allowed: list[str] | None) -> str | None:
        """The model the plan's replies use: LLM_MODEL (None) when the plan allows it or lists
        none, else the first it lists."""
        return None if not allowed or self._default_model in allowed else allowed[0]

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


def message_blocked(
    verdict: Verdict | None, message_id: uuid.UUID, *, crisis_notice: str | None = None
) -> ValidationFailed:
    """422 message_blocked: which categories, and the message (saved as blocked, or the
    edit not applied)."""
    details: dict[str, object] = {
        "categories": list(verdict.categories) if verdict is not None else [],
        "message_id": str(message_id),
    }
    if crisis_notice is not None:
        details["crisis_notice"] = crisis_notice
    return ValidationFailed(
        "This message was not sent: it goes against the content guidelines.",
        code="message_blocked",
        details=details,
    )


def _notices(row: Record, conversation_id: uuid.UUID) -> list[MessageRead]:
    ids = row.get("notice_ids")
    if not ids:
        return []
    return [
        MessageRead(
            id=id_,
            conversation_id=conversation_id,
            seq=seq,
            role=MessageRole.notice,
            content=content,
            status=MessageStatus.complete,
            persona_version=None,
            personality=None,
            notice_kind=NoticeKind(kind),
            created_at=created_at,
        )
        for id_, seq, kind, content, created_at in zip(
            ids,
            row["notice_seqs"],
            row["notice_kinds"],
            row["notice_contents"],
            row["notice_created_ats"],
            strict=True,
        )
    ]


def _user_message(row: Record, conversation_id: uuid.UUID, content: str) -> MessageRead:
    return MessageRead(
        id=row["user_message_id"],
        conversation_id=conversation_id,
        seq=row["user_seq"],
        role=MessageRole.user,
        content=content,
        status=MessageStatus.complete,
        persona_version=None,
        personality=None,
        created_at=row["user_created_at"],
    )


def _reply(
    row: Record,
    conversation_id: uuid.UUID,
    content: str,
    status: MessageStatus,
    persona_version: int | None = None,
    personality: PersonalityType | None = None,
) -> MessageRead:
    """The reply begin_turn returned: replayed whole, or the placeholder to be generated."""
    return MessageRead(
        id=row["reply_id"],
        conversation_id=conversation_id,
        seq=row["reply_seq"],
        role=MessageRole.assistant,
        content=content,
        status=status,
        persona_version=persona_version,
        personality=personality,
        variant=row["reply_variant"],
        reply_to=row["user_message_id"],
        created_at=row["reply_created_at"],
    )
