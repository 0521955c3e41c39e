"""The moderation interface: `Moderator`, its `ModerationResult`, `ModerationUnavailable`.

Categories are named as OpenAI's omni-moderation API names them (`self-harm/intent`,
`sexual/minors`...); a provider with a category of its own that has no counterpart there
names it in the same style (Llama Guard's `privacy`, `elections`...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

# OpenAI's omni-moderation categories (results[0].categories / category_scores keys).
HARASSMENT: Final = "harassment"
HARASSMENT_THREATENING: Final = "harassment/threatening"
HATE: Final = "hate"
HATE_THREATENING: Final = "hate/threatening"
ILLICIT: Final = "illicit"
ILLICIT_VIOLENT: Final = "illicit/violent"
SELF_HARM: Final = "self-harm"
SELF_HARM_INTENT: Final = "self-harm/intent"
SELF_HARM_INSTRUCTIONS: Final = "self-harm/instructions"
SEXUAL: Final = "sexual"
SEXUAL_MINORS: Final = "sexual/minors"
VIOLENCE: Final = "violence"
VIOLENCE_GRAPHIC: Final = "violence/graphic"

OPENAI_CATEGORIES: Final = (
    HARASSMENT,
    HARASSMENT_THREATENING,
    HATE,
    HATE_THREATENING,
    ILLICIT,
    ILLICIT_VIOLENT,
    SELF_HARM,
    SELF_HARM_INTENT,
    SELF_HARM_INSTRUCTIONS,
    SEXUAL,
    SEXUAL_MINORS,
    VIOLENCE,
    VIOLENCE_GRAPHIC,
)


@dataclass(frozen=True, slots=True)
class ModerationResult:
    """One verdict on one text.

    `categories` holds every category the provider scored, flagged or not (score 0..1);
    `flagged_categories` those the provider itself flagged (for OpenAI its per-category
    booleans, which use thresholds of its own, so a flagged score may be low). `flagged`
    is the provider's overall verdict. `model` and `usage`: what the check cost (usage
    records, docs/usage.md)."""

    flagged: bool
    categories: Mapping[str, float]
    provider: str
    flagged_categories: frozenset[str] = field(default_factory=frozenset)
    # The model a remote provider called (None: local rules, no model call) and the
    # (prompt, completion) tokens it reported (None: none reported; the caller estimates).
    model: str | None = None
    usage: tuple[int, int] | None = None


class ModerationUnavailable(Exception):
    """The provider gave no verdict: unreachable, timed out, an error status, an unreadable answer."""

    def __init__(self, provider: str, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.timeout = timeout


class Moderator(Protocol):
    name: str
    # None: the provider judges a text as a whole (a model), so a streaming reply is checked
    # whole at its end. A number: its verdict on a text is the union of its verdicts on
    # parts that overlap by this many characters (local rules matching phrases no longer
    # than that), so every part of a reply needs reading only once.
    context_chars: int | None

    async def check(self, text: str) -> ModerationResult:
        """The verdict on `text`; raises `ModerationUnavailable` when there is none."""
        ...

    async def aclose(self) -> None:
        """Release the provider's connections (a no-op for the offline one)."""
        ...
