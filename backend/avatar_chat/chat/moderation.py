"""Moderation in a chat turn (docs/safety.md): the operator's policy, the check of the
user's message before the model is asked, and the check of the reply as it streams.

- `SafetyPolicy`, from the settings: an action per category (allow, block, crisis), the
  stricter actions that hold for minors whatever the operator set, the notices' texts and
  cadences, the fail mode.
- `Moderation.check_input`: the message's `Verdict`, decided in the API before
  begin_turn, which writes what it implies (a blocked message, a crisis notice, the
  safety events) in its one round trip: no extra statement for the check.
- `ReplyCheck`: the reply is checked every MODERATION_OUTPUT_CHECK_CHARS characters as
  it streams and at the end (whole, for a model); a flagged reply stops, is saved as `filtered`
  with the operator's replacement text (its flagged text is kept nowhere) and the client
  is told to replace what it showed. MODERATION_OUTPUT_MODE=hold lets only checked text
  out, at the cost of text arriving in steps of that many characters.

A provider that fails never lets a message through silently: FailMode.closed refuses
(503 moderation_unavailable, nothing sent to the model; a reply stops as failed),
FailMode.open goes on and the event is recorded (`unchecked`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from prometheus_client import Counter, Histogram

from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.core.metrics import OFF, Labelled, Metrics, Observer
from avatar_chat.core.settings import CrisisMode, FailMode, ModerationProviderName, OutputMode, Settings
from avatar_chat.safety import base as c
from avatar_chat.safety.base import ModerationResult, ModerationUnavailable, Moderator
from avatar_chat.usage.records import ModerationSpend


class Action(StrEnum):
    allow = "allow"
    block = "block"
    crisis = "crisis"


# What a companion app would want (docs/safety.md#actions): self-harm and suicidal
# ideation get the crisis protocol; sexual content and the severe categories are
# refused; the milder ones (an insult, a dark joke) are the model's to answer.
DEFAULT_ACTIONS: Final[Mapping[str, Action]] = {
    c.SELF_HARM: Action.crisis,
    c.SELF_HARM_INTENT: Action.crisis,
    c.SELF_HARM_INSTRUCTIONS: Action.crisis,
    c.SEXUAL: Action.block,
    c.SEXUAL_MINORS: Action.block,
    c.HARASSMENT_THREATENING: Action.block,
    c.HATE_THREATENING: Action.block,
    c.ILLICIT_VIOLENT: Action.block,
    c.VIOLENCE_GRAPHIC: Action.block,
}
# For a minor, whatever the operator set: sexual content blocked in both directions.
MINOR_ACTIONS: Final[Mapping[str, Action]] = {c.SEXUAL: Action.block, c.SEXUAL_MINORS: Action.block}

_SEVERITY: Final = {Action.allow: 0, Action.block: 1, Action.crisis: 2}


def parse_actions(text: str) -> dict[str, Action]:
    """MODERATION_ACTIONS ("self-harm=crisis, sexual=allow") over the defaults."""
    actions = dict(DEFAULT_ACTIONS)
    for item in text.split(","):
        if not item.strip():
            continue
        category, sep, action = (part.strip() for part in item.partition("="))
        if not sep or not category or action not in Action.__members__:
            raise ValueError(f"MODERATION_ACTIONS: {item.strip()!r} is not category=allow|block|crisis")
        actions[category] = Action(action)
    return actions


@dataclass(frozen=True, slots=True)
class Verdict:
    """What moderation said of one text, as begin_turn and finish_turn take it."""

    provider: str
    categories: tuple[str, ...] = ()  # the flagged ones, sorted
    block: bool = False
    crisis: bool = False
    minor_block: bool = False
    minor_crisis: bool = False
    unchecked: bool = False  # the provider failed and the fail mode is open

    @property
    def recorded(self) -> bool:
        """Whether begin_turn has anything to do with it."""
        return self.block or self.crisis or self.minor_block or self.minor_crisis or self.unchecked

    def refuses(self, minor: bool) -> bool:
        """Whether the text must not reach (or leave) the model, for this user."""
        return (self.minor_block or self.minor_crisis) if minor else (self.block or self.crisis)

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "categories": list(self.categories),
            "block": self.block,
            "crisis": self.crisis,
            "minor_block": self.minor_block,
            "minor_crisis": self.minor_crisis,
            "unchecked": self.unchecked,
        }


@functools.cache
def _clean(provider: str) -> Verdict:
    """The verdict on a text nothing was flagged in: one per provider, shared."""
    return Verdict(provider=provider)


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    actions: Mapping[str, Action]
    fail_mode: FailMode
    crisis_mode: CrisisMode
    crisis_notice: str
    crisis_notices: Mapping[str, str]  # by lower-cased language tag
    disclosure: str | None
    break_notice: str | None
    every_s: float
    gap_s: float
    output_check_chars: int
    output_mode: OutputMode
    filtered_text: str

    @classmethod
    def from_settings(cls, settings: Settings) -> SafetyPolicy:
        return cls(
            actions=parse_actions(settings.moderation_actions),
            fail_mode=settings.moderation_fail_mode,
            crisis_mode=settings.safety_crisis_mode,
            crisis_notice=settings.safety_crisis_notice,
            crisis_notices={tag.lower(): text for tag, text in settings.safety_crisis_notices.items()},
            disclosure=settings.safety_disclosure_notice or None,
            break_notice=settings.safety_break_notice or None,
            every_s=settings.safety_reminder_interval_minutes * 60,
            gap_s=settings.safety_interaction_gap_minutes * 60,
            output_check_chars=settings.moderation_output_check_chars,
            output_mode=settings.moderation_output_mode,
            filtered_text=settings.moderation_filtered_text,
        )

    @property
    def notices_on(self) -> bool:
        """Whether begin_turn has a notice to give even without moderation."""
        return self.disclosure is not None or self.break_notice is not None

    def action(self, category: str, *, minor: bool) -> Action:
        general = self.actions.get(category, Action.allow)
        if not minor:
            return general
        stricter = MINOR_ACTIONS.get(category, Action.allow)
        return stricter if _SEVERITY[stricter] > _SEVERITY[general] else general

    def verdict(self, result: ModerationResult) -> Verdict:
        if not result.flagged_categories:
            return _clean(result.provider)
        flagged = tuple(sorted(result.flagged_categories))
        adult = {self.action(category, minor=False) for category in flagged}
        minor = {self.action(category, minor=True) for category in flagged}
        return Verdict(
            provider=result.provider,
            categories=flagged,
            block=Action.block in adult,
            crisis=Action.crisis in adult,
            minor_block=Action.block in minor,
            minor_crisis=Action.crisis in minor,
        )

    def crisis_text(self, accept_language: str | None) -> str:
        """The crisis notice for the client's language: the first tag of Accept-Language
        that has one (exactly, then its language), else the default."""
        if self.crisis_notices and accept_language:
            for part in accept_language.split(",")[:10]:
                tag = part.split(";", 1)[0].strip().lower()
                for candidate in (tag, tag.split("-", 1)[0]):
                    if candidate in self.crisis_notices:
                        return self.crisis_notices[candidate]
        return self.crisis_notice

    def turn_parameters(self, verdict: Verdict | None, accept_language: str | None) -> dict[str, Any]:
        """begin_turn's p_safety. The crisis notice's text only with a crisis verdict: the
        only turn that can use it (the hot path of every other turn neither picks nor sends it)."""
        crisis = verdict is not None and (verdict.crisis or verdict.minor_crisis)
        return {
            "verdict": verdict.as_json() if verdict is not None and verdict.recorded else None,
            "disclosure": self.disclosure,
            "break": self.break_notice,
            "crisis": self.crisis_text(accept_language) if crisis else None,
            "crisis_replaces": self.crisis_mode == CrisisMode.instead,
            "every_s": self.every_s,
            "gap_s": self.gap_s,
        }


CHECK_RESULTS: Final = ("clean", "flagged", "unavailable")


@dataclass(frozen=True, slots=True)
class ModerationMetrics:
    checks: Labelled = field(default_factory=lambda: Labelled(None))  # direction, result
    categories: Labelled = field(default_factory=lambda: Labelled(None))  # direction, category, action
    seconds: Observer = OFF
    notices: Labelled = field(default_factory=lambda: Labelled(None))  # kind

    @classmethod
    def registered(cls, metrics: Metrics) -> ModerationMetrics:
        if not metrics.enabled:
            return cls()
        r = metrics.registry
        return cls(
            checks=Labelled(
                Counter(
                    "avatar_chat_moderation_checks",
                    "Moderation checks by direction (in: the user's message, out: the reply) and"
                    " result (clean, flagged, unavailable).",
                    ("direction", "result"),
                    registry=r,
                )
            ),
            categories=Labelled(
                Counter(
                    "avatar_chat_moderation_flags",
                    "Flagged categories by direction and the action they called for.",
                    ("direction", "category", "action"),
                    registry=r,
                )
            ),
            seconds=Histogram(
                "avatar_chat_moderation_seconds",
                "How long the moderation provider took to answer (or fail).",
                buckets=(0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=r,
            ),
            notices=Labelled(
                Counter(
                    "avatar_chat_safety_notices",
                    "Safety notices issued, by kind (disclosure, break, crisis).",
                    ("kind",),
                    registry=r,
                )
            ),
        )


def moderation_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "Moderation is unavailable, so the message was not sent; retry shortly.",
        code="moderation_unavailable",
        retry_after_s=2,
    )


class Moderation:
    """One worker's moderation: the provider, the policy, the counters."""

    def __init__(self, moderator: Moderator | None, policy: SafetyPolicy, metrics: ModerationMetrics) -> None:
        self.moderator = moderator  # None: MODERATION_PROVIDER=none
        self.policy = policy
        self.metrics = metrics

    async def check(
        self,
        text: str,
        direction: str,
        *,
        minor: bool | None = None,
        count_clean: bool = True,
        spend: ModerationSpend | None = None,
    ) -> Verdict | None:
        """The verdict on `text` (None: moderation is off). A failed provider raises 503
        moderation_unavailable when the fail mode is closed, else answers `unchecked`.
        `count_clean=False`: the caller counts clean checks itself (a reply's, once at its end).
        `spend` adds what a model call cost (usage records)."""
        moderator = self.moderator
        if moderator is None:
            return None
        # A model's latency is worth a histogram; local rules' is CPU time (bench/).
        timed = moderator.context_chars is None
        started = time.perf_counter() if timed else 0.0
        try:
            result = await moderator.check(text)
        except ModerationUnavailable:
            if timed:
                self.metrics.seconds.observe(time.perf_counter() - started)
            self.metrics.checks(direction, "unavailable").inc()
            if self.policy.fail_mode == FailMode.closed:
                raise moderation_unavailable() from None
            return Verdict(provider=moderator.name, unchecked=True)
        if timed:
            self.metrics.seconds.observe(time.perf_counter() - started)
        if spend is not None and result.model is not None:
            spend.add(result.model, result.usage, len(text))
        verdict = self.policy.verdict(result)
        if verdict.categories:
            self.metrics.checks(direction, "flagged").inc()
        elif count_clean:
            self.metrics.checks(direction, "clean").inc()
        for category in verdict.categories:
            action = self.policy.action(category, minor=bool(minor))
            self.metrics.categories(direction, category, str(action)).inc()
        return verdict

    def reply_check(self, *, minor: bool) -> ReplyCheck | None:
        return None if self.moderator is None else ReplyCheck(self, minor=minor)

    def count_notices(self, kinds: list[str]) -> None:
        for kind in kinds:
            self.metrics.notices(kind).inc()


class ReplyCheck:
    """Checks a streaming reply every `output_check_chars` characters (the new text with the
    characters before it, so a phrase across the boundary is seen) and at the end: the whole
    reply for a provider that judges texts as a whole (a model), the rest for one whose
    verdict is the union of its verdicts on overlapping parts (the offline rules: parts
    overlap by its `context_chars`, so each character is read about once).

    `take` answers the text that may go out now, or None when a check is due (then await
    `checked`): no coroutine per chunk. `finish` answers the rest once the reply passed.
    With OutputMode.stream text goes out as it comes (a flagged reply has shown at most
    about `output_check_chars` unchecked characters, which the client then replaces); with
    OutputMode.hold only checked text goes out. Once `flagged` is set nothing more does."""

    def __init__(self, moderation: Moderation, *, minor: bool) -> None:
        assert moderation.moderator is not None
        self._moderation = moderation
        self._minor = minor
        self._every = moderation.policy.output_check_chars
        context = moderation.moderator.context_chars
        self._overlap = self._every if context is None else min(self._every, context)
        self._whole_at_end = context is None
        self._hold = moderation.policy.output_mode == OutputMode.hold
        self._parts: list[str] = []  # the whole text so far, joined only when checked
        self._held: list[str] = []  # the text not let out yet
        self._length = 0
        self._checked = 0  # characters of the text checked
        self.flagged: Verdict | None = None
        self.unchecked: Verdict | None = None  # a check the provider failed (fail mode open)
        self._checks = 0
        self._counted = 0
        self.spend = ModerationSpend()  # what the checks cost (a remote provider's calls)

    def take(self, chunk: str) -> str | None:
        self._parts.append(chunk)
        self._length += len(chunk)
        if self._length - self._checked >= self._every:
            self._held.append(chunk)  # out only once the check passed
            return None
        if self._hold:
            self._held.append(chunk)
            return ""
        return chunk  # stream mode: the common case, nothing held, nothing allocated

    async def checked(self) -> str:
        """Run the check `take` said is due; the text that may go out ("" when flagged)."""
        text = "".join(self._parts)
        self._parts = [text]
        if not await self._passes(text[max(0, self._checked - self._overlap) :]):
            return ""
        self._checked = self._length
        return self._let_out()

    async def add(self, chunk: str) -> str:
        """`take`, then `checked` when a check is due."""
        out = self.take(chunk)
        return await self.checked() if out is None else out

    async def finish(self) -> str:
        """The last check; the text not let out yet, unless it is flagged."""
        if self.flagged is not None or not self._length:
            return ""
        text = "".join(self._parts)
        if not self._whole_at_end:
            if self._checked == self._length:
                return self._let_out()
            text = text[max(0, self._checked - self._overlap) :]
        if not await self._passes(text):
            return ""
        self._checked = self._length
        return self._let_out()

    def _let_out(self) -> str:
        held = self._held
        self._held = []
        return held[0] if len(held) == 1 else "".join(held)

    async def _passes(self, text: str) -> bool:
        self._checks += 1
        verdict = await self._moderation.check(
            text, "out", minor=self._minor, count_clean=False, spend=self.spend
        )
        if verdict is not None and (verdict.unchecked or verdict.categories):
            self._counted += 1  # Moderation.check counted it (flagged, unavailable)
        if verdict is not None and verdict.unchecked:
            self.unchecked = verdict
        elif verdict is not None and verdict.refuses(self._minor):
            self.flagged = verdict
            return False
        return True

    def finished(self) -> dict[str, Any] | None:
        """The reply ended: count its clean checks (once, not a metric write per check), and
        answer finish_turn's p_moderation, what to record of it."""
        clean = self._checks - self._counted
        if clean > 0:
            self._moderation.metrics.checks("out", "clean").inc(clean)
        verdict, action = (self.flagged, "filter") if self.flagged else (self.unchecked, "unchecked")
        if verdict is None:
            return None
        return {"action": action, "categories": list(verdict.categories), "provider": verdict.provider}


def create_moderator(settings: Settings) -> Moderator | None:
    """The provider MODERATION_PROVIDER names (None for `none`)."""
    provider = settings.moderation_provider
    key = settings.moderation_api_key.get_secret_value() if settings.moderation_api_key else None
    if provider == ModerationProviderName.none:
        return None
    if provider == ModerationProviderName.openai:
        from avatar_chat.safety import openai_moderation

        return openai_moderation.OpenAIModerator(
            api_key=key,
            base_url=settings.moderation_base_url or openai_moderation.DEFAULT_BASE_URL,
            model=settings.moderation_model or openai_moderation.DEFAULT_MODEL,
            timeout_s=settings.moderation_timeout_s,
        )
    if provider == ModerationProviderName.llama_guard:
        from avatar_chat.safety import llama_guard

        if not settings.moderation_base_url:
            raise ValueError("MODERATION_PROVIDER=llama-guard needs MODERATION_BASE_URL")
        return llama_guard.LlamaGuardModerator(
            base_url=settings.moderation_base_url,
            api_key=key,
            model=settings.moderation_model or llama_guard.DEFAULT_MODEL,
            timeout_s=settings.moderation_timeout_s,
        )
    from avatar_chat.safety.offline import OfflineModerator

    return OfflineModerator()
