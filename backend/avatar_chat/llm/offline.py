"""The default provider: deterministic, no key, clearly labelled.

Its reply names the avatar, the personality and the persona version it was given, so a
person trying the app sees persona switches take effect on the very next message.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from avatar_chat.avatars.persona import traits_of
from avatar_chat.llm.base import ChatRequest, SummaryRequest

_MODES = {
    "assistant": "Getting straight to the point.",
    "companion": "Take your time, I'm listening.",
}
_SNIPPET_CHARS = 80


def offline_reply(request: ChatRequest) -> str:
    avatar = request.avatar
    said = " ".join(request.user_message.split())
    if len(said) > _SNIPPET_CHARS:
        said = said[: _SNIPPET_CHARS - 1] + "…"
    return (
        f"{avatar.name} ({avatar.personality}, persona v{avatar.version}, {request.mode} mode): "
        f"Speaking as someone {traits_of(avatar.personality)}. {_MODES.get(request.mode, '')} "
        f'You said: "{said}". '
        "[offline provider: set LLM_BASE_URL and LLM_API_KEY for a real model]"
    )


_SUMMARY_LINE_CHARS = 120
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


def offline_summary(request: SummaryRequest) -> str:
    """Extractive and deterministic: the summary so far, then the first sentence of each
    new message with who said it; the oldest lines go first when it grows too long."""
    lines = request.previous.splitlines() if request.previous else []
    for message in request.messages:
        who = "User" if message.role == "user" else request.avatar.name
        first = _SENTENCE_END.split(" ".join(message.content.split("\n")).strip(), maxsplit=1)[0]
        if len(first) > _SUMMARY_LINE_CHARS:
            first = first[: _SUMMARY_LINE_CHARS - 1] + "…"
        lines.append(f"{who}: {first}")
    while lines and len("\n".join(lines)) > request.max_chars:
        lines.pop(0)
    return "\n".join(lines)


class OfflineProvider:
    name = "offline"

    def __init__(self, *, chunk_delay_s: float = 0.0, words_per_chunk: int = 4) -> None:
        self._delay = chunk_delay_s
        self._words = words_per_chunk

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        words = offline_reply(request).split(" ")
        for start in range(0, len(words), self._words):
            chunk = " ".join(words[start : start + self._words])
            yield chunk if start == 0 else " " + chunk
            if self._delay:
                await asyncio.sleep(self._delay)

    async def summarize(self, request: SummaryRequest) -> str:
        return offline_summary(request)

    def model_of(self, requested: str | None) -> str:
        return self.name  # whatever the plan names: nothing is billed for it

    async def aclose(self) -> None:
        return None
