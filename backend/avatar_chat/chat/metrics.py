"""What chat counts: Prometheus families in the app's registry (`ChatMetrics`), and a few
plain counters tests read (`ChatStats`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Counter, Histogram

from avatar_chat.chat.moderation import ModerationMetrics
from avatar_chat.core.metrics import OFF, Incrementer, Labelled, Metrics, Observer
from avatar_chat.usage.records import UsageMetrics

# How a chat turn (a send, regenerate or edit) ended; see ChatService.
TURN_OUTCOMES: Final = (
    "complete",  # the reply was saved whole
    "stopped",  # a client stopped it; the text so far was saved
    "failed",  # the provider failed (or the turn deadline passed); saved as failed
    "interrupted",  # shutdown cut it off; saved as interrupted
    "superseded",  # a retry took the reply over while this attempt generated it
    "not_saved",  # the database stayed away past the turn deadline
    "replayed",  # an Idempotency-Key already answered: the original exchange, nothing generated
    "in_progress",  # 409 send_in_progress: that key's reply is still being generated
    "refused",  # begin_turn refused it (404, 409, 422, 429, 503...)
)
RATE_LIMIT_CODES: Final = ("rate_limited", "too_many_streams", "quota_exceeded")

_FIRST_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
_REPLY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


@dataclass(slots=True)
class ChatStats:
    summaries_stored: int = 0
    summaries_skipped: int = 0  # found another summary of the conversation running
    partial_saves: int = 0  # writes of a reply's text while it was generated (on demand)


@dataclass(frozen=True, slots=True)
class ChatMetrics:
    """Turns by outcome, takeovers, limit refusals, the provider's timing; children made
    once, so recording is an `inc()` or an `observe()`. No-ops unless registered."""

    turns: dict[str, Incrementer] = field(default_factory=lambda: dict.fromkeys(TURN_OUTCOMES, OFF))
    taken_over: Incrementer = OFF
    rate_limited: dict[str, Incrementer] = field(default_factory=lambda: dict.fromkeys(RATE_LIMIT_CODES, OFF))
    first_token_seconds: Observer = OFF
    reply_seconds: Observer = OFF
    provider_failures: Callable[[str], Incrementer] = field(default_factory=lambda: Labelled(None))
    moderation: ModerationMetrics = field(default_factory=ModerationMetrics)
    usage: UsageMetrics = field(default_factory=UsageMetrics)

    @classmethod
    def registered(cls, metrics: Metrics) -> ChatMetrics:
        """Chat's families in `metrics`' registry (once per app); no-ops when it is disabled."""
        if not metrics.enabled:
            return cls()
        r = metrics.registry
        turns = Counter(
            "avatar_chat_chat_turns",
            "Chat turns (sends, regenerations, edits) by how they ended.",
            ("outcome",),
            registry=r,
        )
        taken_over = Counter(
            "avatar_chat_chat_replies_taken_over",
            "Retries (same Idempotency-Key) that took a reply over: one that had failed, or whose"
            " worker died or lease ran out (begin_turn outcome retry).",
            registry=r,
        )
        refusals = Counter(
            "avatar_chat_rate_limit_refusals",
            "Sends refused with 429 by the per-user limits, by code.",
            ("code",),
            registry=r,
        )
        first_token = Histogram(
            "avatar_chat_llm_first_token_seconds",
            "From asking the provider for a reply to its first chunk.",
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        reply = Histogram(
            "avatar_chat_llm_reply_duration_seconds",
            "From asking the provider for a reply to its last chunk (or its failure).",
            buckets=_REPLY_BUCKETS,
            registry=r,
        )
        failures = Counter(
            "avatar_chat_llm_failures",
            "Provider calls (replies and summaries) that failed, by error code.",
            ("code",),
            registry=r,
        )
        return cls(
            turns={outcome: turns.labels(outcome) for outcome in TURN_OUTCOMES},
            taken_over=taken_over,
            rate_limited={code: refusals.labels(code) for code in RATE_LIMIT_CODES},
            first_token_seconds=first_token,
            reply_seconds=reply,
            provider_failures=Labelled(failures),
            moderation=ModerationMetrics.registered(metrics),
            usage=UsageMetrics.registered(metrics),
        )
