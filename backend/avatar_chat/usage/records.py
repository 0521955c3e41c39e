"""What a model call cost, as `avatar_chat.record_usage` takes it (one JSON object per
call, or per message's moderation checks), and the token counters Prometheus serves.

Figures the provider reported are recorded as `provider`; otherwise they are estimated from
the text at four characters a token (`estimate`): the offline provider, a stream cut
before its usage chunk, a server that ignores `stream_options`, moderation APIs that report
none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from prometheus_client import Counter

from avatar_chat.core.metrics import Labelled, Metrics

Kind = Literal["reply", "summary", "moderation"]
KINDS: Final = ("reply", "summary", "moderation")

# The same rule the prompt budget uses (chat.prompt): no tokenizer needed for an estimate.
CHARS_PER_TOKEN: Final = 4


def estimate_tokens(chars: int) -> int:
    """Tokens in `chars` characters of text, rounded up (an empty text costs none)."""
    return -(-chars // CHARS_PER_TOKEN)


def usage_entry(
    kind: Kind,
    model: str,
    plan: str | None,
    *,
    reported: tuple[int, int] | None,
    prompt_chars: int,
    completion_chars: int,
    status: str | None = None,
    calls: int = 1,
) -> dict[str, Any]:
    """One record: the provider's (prompt, completion) tokens when it `reported` them, else
    estimated from the characters sent and received."""
    if reported is not None:
        prompt, completion = reported
        source = "provider"
    else:
        prompt, completion = estimate_tokens(prompt_chars), estimate_tokens(completion_chars)
        source = "estimate"
    return {
        "kind": kind,
        "model": model,
        "plan": plan,
        "calls": calls,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "source": source,
        "status": status,
    }


@dataclass(slots=True)
class ModerationSpend:
    """A message's or a reply's moderation calls, recorded as one entry per model."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    model: str = ""

    def add(self, model: str, reported: tuple[int, int] | None, text_chars: int) -> None:
        self.calls += 1
        self.model = model
        if reported is None:
            self.estimated = True
            self.prompt_tokens += estimate_tokens(text_chars)
        else:
            self.prompt_tokens += reported[0]
            self.completion_tokens += reported[1]

    def entry(self, plan: str | None) -> dict[str, Any] | None:
        if not self.calls:
            return None
        return {
            "kind": "moderation",
            "model": self.model,
            "plan": plan,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "source": "estimate" if self.estimated else "provider",
            "status": None,
        }


@dataclass(frozen=True, slots=True)
class UsageMetrics:
    """`avatar_chat_llm_tokens_total{model, kind, type}`: tokens spent, as recorded."""

    tokens: Labelled = field(default_factory=lambda: Labelled(None))

    @classmethod
    def registered(cls, metrics: Metrics) -> UsageMetrics:
        if not metrics.enabled:
            return cls()
        family = Counter(
            "avatar_chat_llm_tokens",
            "Tokens spent on model calls (provider-reported or estimated), by model, kind (reply,"
            " summary, moderation) and type (prompt, completion).",
            ("model", "kind", "type"),
            registry=metrics.registry,
        )
        return cls(tokens=Labelled(family))

    def count(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["prompt_tokens"]:
                self.tokens(entry["model"], entry["kind"], "prompt").inc(entry["prompt_tokens"])
            if entry["completion_tokens"]:
                self.tokens(entry["model"], entry["kind"], "completion").inc(entry["completion_tokens"])
