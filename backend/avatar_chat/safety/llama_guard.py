"""Llama Guard 3 or 4 behind any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp...).

The text goes as the one user message of a non-streamed `POST {base_url}/chat/completions`
(temperature 0, a few tokens); the model's chat template, served with it, wraps it in
Llama Guard's classification prompt (the MLCommons hazard taxonomy, S1-S14) and asks for
a verdict on the user's turn. The answer is one of:

    safe
    unsafe
    S1,S11

(the second line: the violated categories, comma-separated; some servers add spaces or
blank lines, which are ignored). Each S-code is mapped onto OpenAI's category names, score
1.0 when flagged, 0.0 otherwise:

    S1  violent crimes                -> violence, illicit/violent
    S2  non-violent crimes            -> illicit
    S3  sex-related crimes            -> sexual, illicit
    S4  child sexual exploitation     -> sexual/minors
    S5  defamation                    -> defamation              (no OpenAI counterpart)
    S6  specialized advice            -> specialized-advice      (no OpenAI counterpart)
    S7  privacy                       -> privacy                 (no OpenAI counterpart)
    S8  intellectual property         -> intellectual-property   (no OpenAI counterpart)
    S9  indiscriminate weapons        -> illicit/violent
    S10 hate                          -> hate
    S11 suicide & self-harm           -> self-harm, self-harm/intent
    S12 sexual content                -> sexual
    S13 elections                     -> elections               (no OpenAI counterpart)
    S14 code interpreter abuse        -> code-interpreter-abuse  (no OpenAI counterpart)

Llama Guard does not tell ideation from instructions: S11 sets `self-harm/intent` so a
crisis protocol keyed on it is never silent with this provider. An unknown code (a later
taxonomy) is kept as `llama-guard/S<n>`; an answer that is neither verdict, or `unsafe`
without any code, raises `ModerationUnavailable`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from avatar_chat.core.tokens import reported_tokens
from avatar_chat.safety.base import (
    HATE,
    ILLICIT,
    ILLICIT_VIOLENT,
    SELF_HARM,
    SELF_HARM_INTENT,
    SEXUAL,
    SEXUAL_MINORS,
    VIOLENCE,
    ModerationResult,
)
from avatar_chat.safety.http import JsonPoster

DEFAULT_MODEL: Final = "meta-llama/Llama-Guard-3-8B"

S_CODES: Final[dict[str, tuple[str, ...]]] = {
    "S1": (VIOLENCE, ILLICIT_VIOLENT),
    "S2": (ILLICIT,),
    "S3": (SEXUAL, ILLICIT),
    "S4": (SEXUAL_MINORS,),
    "S5": ("defamation",),
    "S6": ("specialized-advice",),
    "S7": ("privacy",),
    "S8": ("intellectual-property",),
    "S9": (ILLICIT_VIOLENT,),
    "S10": (HATE,),
    "S11": (SELF_HARM, SELF_HARM_INTENT),
    "S12": (SEXUAL,),
    "S13": ("elections",),
    "S14": ("code-interpreter-abuse",),
}
ALL_CATEGORIES: Final = tuple(dict.fromkeys(c for cs in S_CODES.values() for c in cs))
_CODE = re.compile(r"S\d{1,2}")
_MAX_TOKENS = 20


class LlamaGuardModerator:
    name: str = "llama-guard"
    context_chars: int | None = None

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float = 10.0,
        max_retries: int = 1,
    ) -> None:
        self._model = model
        self._http = JsonPoster(self.name, base_url, api_key, timeout_s=timeout_s, max_retries=max_retries)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self, text: str) -> ModerationResult:
        answer = await self._http.post(
            "chat/completions",
            {
                "model": self._model,
                "messages": [{"role": "user", "content": text}],
                "temperature": 0,
                "max_tokens": _MAX_TOKENS,
                "stream": False,
            },
        )
        return dataclasses.replace(
            self.parse(_content(answer, self._http)),
            model=self._model,
            usage=reported_tokens(answer.get("usage") if isinstance(answer, dict) else None),
        )

    def parse(self, verdict: str) -> ModerationResult:
        """The result a Llama Guard verdict (`safe`, `unsafe\\nS1,S11`) stands for."""
        lines = [line.strip() for line in verdict.strip().splitlines() if line.strip()]
        head = lines[0].lower() if lines else ""
        categories = dict.fromkeys(ALL_CATEGORIES, 0.0)
        if head == "safe" and len(lines) == 1:
            return ModerationResult(flagged=False, categories=categories, provider=self.name)
        codes = [code.strip().upper() for line in lines[1:] for code in line.split(",") if code.strip()]
        if head != "unsafe" or not codes or not all(_CODE.fullmatch(code) for code in codes):
            raise self._http.unavailable(f"unreadable verdict {verdict[:40]!r}.")
        flagged: set[str] = set()
        for code in codes:
            flagged.update(S_CODES.get(code, (f"llama-guard/{code}",)))
        categories |= dict.fromkeys(flagged, 1.0)
        return ModerationResult(
            flagged=True, categories=categories, provider=self.name, flagged_categories=frozenset(flagged)
        )


def _content(answer: object, http: JsonPoster) -> str:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise http.unavailable("the answer has no message content.")
    return content
