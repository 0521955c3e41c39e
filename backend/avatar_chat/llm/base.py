"""The one small interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from avatar_chat.avatars.persona import AvatarSnapshot


@dataclass(frozen=True, slots=True)
class PromptMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """What one model call cost, as the provider reported it."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class UsageReport:
    """Where a provider puts what a call cost, when it knows: `reported` stays None when
    it does not (the offline provider, a stream cut before its usage chunk, a server that
    ignores `stream_options`), and the caller estimates it from the text (usage.estimate)."""

    reported: TokenUsage | None = None
    # The length of the text a non-streamed call answered (a summary), once it answered.
    answered_chars: int | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A whole prompt, plus what it was built from (the offline provider reads those)."""

    avatar: AvatarSnapshot
    mode: str
    messages: tuple[PromptMessage, ...]  # system prompt, recent window, the new user message
    # The model and reply length the user's plan allows (None: the provider's settings).
    model: str | None = None
    max_tokens: int | None = None
    usage: UsageReport = field(default_factory=UsageReport, compare=False)

    @property
    def user_message(self) -> str:
        return self.messages[-1].content


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    """Fold `messages` (oldest first) into `previous` (the summary so far, "" for none)."""

    avatar: AvatarSnapshot
    previous: str
    messages: tuple[PromptMessage, ...]
    max_chars: int
    model: str | None = None
    usage: UsageReport = field(default_factory=UsageReport, compare=False)


class ProviderFailure(Exception):
    """The provider could not produce a (complete) reply.

    `code` is stable and machine-readable (it is stored as the failed message's
    error_code and sent to the client); `timeout` selects 504 over 502.
    """

    def __init__(self, code: str, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.timeout = timeout


class LLMProvider(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        """Yield the reply in chunks; raise ProviderFailure on any failure. What the call
        cost goes in `request.usage` when the provider reports it."""
        ...

    async def summarize(self, request: SummaryRequest) -> str:
        """The summary, at most `request.max_chars` long; raise ProviderFailure on failure.
        What the call cost goes in `request.usage` when the provider reports it."""
        ...

    def model_of(self, requested: str | None) -> str:
        """The model a call asking for `requested` (None: the configured one) is recorded as."""
        ...

    async def aclose(self) -> None: ...
