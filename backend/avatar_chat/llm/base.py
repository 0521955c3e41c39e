"""The one small interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal, Protocol

from avatar_chat.avatars.persona import AvatarSnapshot


@dataclass(frozen=True, slots=True)
class PromptMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A whole prompt, plus what it was built from (the offline provider reads those)."""

    avatar: AvatarSnapshot
    mode: str
    messages: tuple[PromptMessage, ...]  # system prompt, recent window, the new user message

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
        """Yield the reply in chunks; raise ProviderFailure on any failure."""
        ...

    async def summarize(self, request: SummaryRequest) -> str:
        """The summary, at most `request.max_chars` long; raise ProviderFailure on failure."""
        ...

    async def aclose(self) -> None: ...
