"""An LLMProvider for any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM...).

Retries belong to the SDK and happen only before a response has started (connection
errors, 408/409/429/5xx, with backoff); once the stream is open nothing is retried, so a
reply is never duplicated. Two deadlines are ours, enforced with asyncio so they hold
whatever the transport does: `llm_timeout_s` from the call to the first token (retries
included) and `llm_stall_timeout_s` between chunks after that. No deadline ever spans a
`yield`, so time the consumer spends on a chunk is never charged to the provider.

A streamed reply goes through the SDK's client (its retries, auth, status errors, SSE
decoding and mid-stream error events) but not its typed layer: the request body is sent as
the plain JSON it already is, and each chunk comes back as the dict the SDK parsed, checked
here, rather than built into a `ChatCompletionChunk`. The typed layer cost ~0.65 ms a
request and ~60 us a chunk: about half the provider's CPU for a 20-chunk reply
(bench/probes/stream_cpu.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Literal

import httpx
import httpx2
import openai
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from avatar_chat.core.settings import Settings
from avatar_chat.core.tokens import reported_tokens
from avatar_chat.llm.base import ChatRequest, ProviderFailure, SummaryRequest, TokenUsage

# Local servers (Ollama, llama.cpp) ignore the key, but the SDK refuses to run without one.
_PLACEHOLDER_API_KEY = "not-needed"
_CONNECT_TIMEOUT_CAP_S = 5.0
# httpx's own read timeout is only a backstop: kept past both of our deadlines so that they,
# with their precise error codes, always fire first.
_TRANSPORT_TIMEOUT_MARGIN_S = 1.0
_MAX_DETAIL_CHARS = 200

_Phase = Literal["connect", "stream"]
# The SDK's stream of chunks as the JSON it decoded (`cast_to=object`: no model built).
_ChunkStream = openai.AsyncStream[object]


class OpenAIProvider:
    name: str = "openai"

    def __init__(self, settings: Settings) -> None:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else ""
        self._secret = key
        self._model = settings.llm_model
        self._max_tokens = settings.llm_max_tokens
        # Ask for the usage chunk (OpenAI, vLLM, Ollama, llama.cpp send it); a server that
        # refuses the option can be told not to (LLM_STREAM_USAGE=false): usage is then estimated.
        self._stream_options = {"include_usage": True} if settings.llm_stream_usage else None
        self._first_token_timeout_s = settings.llm_timeout_s
        self._stall_timeout_s = settings.llm_stall_timeout_s
        read_timeout_s = (
            max(settings.llm_timeout_s, settings.llm_stall_timeout_s) + _TRANSPORT_TIMEOUT_MARGIN_S
        )
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=key or _PLACEHOLDER_API_KEY,
            timeout=openai.Timeout(
                read_timeout_s, connect=min(_CONNECT_TIMEOUT_CAP_S, settings.llm_timeout_s)
            ),
            max_retries=settings.llm_max_retries,
        )

    async def aclose(self) -> None:
        await self._client.close()

    def model_of(self, requested: str | None) -> str:
        return requested or self._model

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str, None]:
        first_token_deadline = asyncio.get_running_loop().time() + self._first_token_timeout_s
        phase: _Phase = "connect"
        stream: _ChunkStream | None = None
        try:
            stream = await self._open(request, first_token_deadline)
            phase = "stream"
            got_text = False
            finish_reason: str | None = None
            while (chunk := await self._next_chunk(stream, got_text, first_token_deadline)) is not None:
                # OpenAI sends it in a last chunk without choices; some servers in every chunk.
                if (usage := _usage(chunk)) is not None:
                    request.usage.reported = usage
                choice = _first_choice(chunk)
                if choice is None:
                    continue
                if (reason := choice.get("finish_reason")) is not None:
                    finish_reason = str(reason)
                text = _delta_text(choice)
                if text:
                    got_text = True
                    # The only yield, outside every deadline (see the module docstring).
                    yield text
            if not got_text:
                raise ProviderFailure(
                    "provider_empty_reply",
                    "The provider finished without any text"
                    + (f" (finish_reason={finish_reason})." if finish_reason else "."),
                )
        except ProviderFailure:
            raise
        except openai.OpenAIError as exc:
            raise self._translate(exc, phase) from _safe_cause(exc)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProviderFailure("provider_bad_response", "The provider sent an unreadable chunk.") from exc
        except (httpx.HTTPError, httpx2.HTTPError) as exc:
            # The SDK wraps transport errors itself; this catches any that slip past it.
            raise _connection_failure(phase) from exc
        finally:
            if stream is not None:
                await _close_stream(stream)

    async def _open(self, request: ChatRequest, first_token_deadline: float) -> _ChunkStream:
        """The streamed completion, requested within the first token's deadline.

        What `chat.completions.create(stream=True)` sends (the same body, headers and
        retries), through the client's `post`: the SDK's transform of the typed parameters
        and its chunk models are left out (see the module docstring)."""
        max_tokens = (
            self._max_tokens if request.max_tokens is None else min(self._max_tokens, request.max_tokens)
        )
        body: dict[str, object] = {
            "model": request.model or self._model,
            "stream": True,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": max_tokens,
        }
        if self._stream_options is not None:
            body["stream_options"] = self._stream_options
        try:
            async with asyncio.timeout_at(first_token_deadline):
                return await self._client.post(
                    "/chat/completions",
                    cast_to=object,
                    body=body,
                    options={"security": {"bearer_auth": True}},
                    stream=True,
                    stream_cls=_ChunkStream,
                )
        except TimeoutError:
            raise self._timed_out() from None

    async def _next_chunk(
        self, stream: _ChunkStream, got_text: bool, first_token_deadline: float
    ) -> object | None:
        """The next chunk, None at the end: within the first token's deadline until text came,
        then within the stall timeout of the chunk before."""
        deadline = (
            asyncio.timeout(self._stall_timeout_s) if got_text else asyncio.timeout_at(first_token_deadline)
        )
        try:
            async with deadline:
                return await anext(stream)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if got_text:
                raise ProviderFailure(
                    "provider_stalled",
                    f"The provider stopped sending for over {self._stall_timeout_s:g} s mid-reply.",
                    timeout=True,
                ) from None
            raise self._timed_out() from None

    async def summarize(self, request: SummaryRequest) -> str:
        """One non-streamed completion; the same deadlines and error codes as a reply."""
        transcript = "\n".join(
            f"{'User' if m.role == 'user' else request.avatar.name}: {m.content}" for m in request.messages
        )
        messages: list[ChatCompletionMessageParam] = [
            ChatCompletionSystemMessageParam(
                role="system",
                content=(
                    f"You keep the memory of {request.avatar.name}, an AI avatar, of its conversation with a "
                    "user. Merge the new messages into the summary so far: keep facts, names, preferences, "
                    f"promises and open questions; drop small talk. Plain sentences, at most "
                    f"{request.max_chars} characters. Answer with the summary only."
                ),
            ),
            ChatCompletionUserMessageParam(
                role="user",
                content=f"Summary so far:\n{request.previous or '(none)'}\n\nNew messages:\n{transcript}",
            ),
        ]
        try:
            async with asyncio.timeout(self._first_token_timeout_s + self._stall_timeout_s):
                completion = await self._client.chat.completions.create(
                    model=request.model or self._model,
                    messages=messages,
                    max_tokens=max(64, request.max_chars // 3),
                )
        except TimeoutError:
            raise self._timed_out() from None
        except openai.OpenAIError as exc:
            raise self._translate(exc, "connect") from _safe_cause(exc)
        except (httpx.HTTPError, httpx2.HTTPError) as exc:
            raise _connection_failure("connect") from exc
        usage = getattr(completion, "usage", None)
        tokens = reported_tokens(usage.model_dump()) if usage is not None else None
        if tokens is not None:
            request.usage.reported = TokenUsage(*tokens)
        choices = getattr(completion, "choices", None)
        text = choices[0].message.content if choices else None
        if not isinstance(text, str) or not text.strip():
            raise ProviderFailure("provider_empty_reply", "The provider answered the summary with no text.")
        return text.strip()[: request.max_chars]

    def _timed_out(self) -> ProviderFailure:
        return ProviderFailure(
            "provider_timeout",
            f"The provider sent no reply within {self._first_token_timeout_s:g} s.",
            timeout=True,
        )

    def _translate(self, exc: openai.OpenAIError, phase: _Phase) -> ProviderFailure:
        # Order matters: the SDK's exception classes nest (APITimeoutError is an
        # APIConnectionError, APIResponseValidationError and APIStatusError are APIErrors).
        if isinstance(exc, openai.APITimeoutError):
            return ProviderFailure("provider_timeout", "The provider request timed out.", timeout=True)
        if isinstance(exc, openai.APIConnectionError):
            return _connection_failure(phase)
        if isinstance(exc, openai.RateLimitError):
            return ProviderFailure(
                "provider_rate_limited", self._status_message("The provider is rate limiting us", exc)
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ProviderFailure(
                "provider_auth_failed", self._status_message("The provider refused our credentials", exc)
            )
        if isinstance(exc, openai.APIStatusError):
            return ProviderFailure("provider_error", self._status_message("The provider failed", exc))
        if isinstance(exc, openai.APIResponseValidationError):
            return ProviderFailure("provider_bad_response", "The provider sent a response we could not read.")
        if isinstance(exc, openai.APIError):
            # An error object sent in place of a chunk, mid-stream.
            return ProviderFailure("provider_error", "The provider reported: " + self._redact(exc.message))
        return ProviderFailure("provider_error", "The provider client failed: " + self._redact(str(exc)))

    def _status_message(self, prefix: str, exc: openai.APIStatusError) -> str:
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else None
        if not isinstance(detail, str) or not detail:
            detail = exc.message
        return f"{prefix} (HTTP {exc.status_code}): {self._redact(detail)}"

    def _redact(self, text: str) -> str:
        # Some servers echo the key they rejected; it must not reach logs or clients.
        if len(self._secret) >= 4:
            text = text.replace(self._secret, "***")
        if len(text) > _MAX_DETAIL_CHARS:
            text = text[: _MAX_DETAIL_CHARS - 1] + "…"
        return text


def _first_choice(chunk: object) -> dict[str, object] | None:
    """The chunk's first choice, None for a chunk without any (the usage chunk).

    The chunk is the JSON as sent, so its shape is checked here."""
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    if not isinstance(choices, list):
        raise ProviderFailure("provider_bad_response", "The provider sent a chunk without choices.")
    if not choices:
        return None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ProviderFailure("provider_bad_response", "The provider sent a malformed choice.")
    return choice


def _usage(chunk: object) -> TokenUsage | None:
    """The usage a chunk carries (`stream_options.include_usage`), if well formed."""
    tokens = reported_tokens(chunk.get("usage")) if isinstance(chunk, dict) else None
    return None if tokens is None else TokenUsage(*tokens)


def _delta_text(choice: dict[str, object]) -> str:
    delta = choice.get("delta")
    if delta is None:
        return ""
    if not isinstance(delta, dict):
        raise ProviderFailure("provider_bad_response", "The provider sent a malformed choice.")
    content = delta.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ProviderFailure("provider_bad_response", "The provider sent non-text content.")
    return content


def _connection_failure(phase: _Phase) -> ProviderFailure:
    if phase == "connect":
        return ProviderFailure("provider_unreachable", "Could not connect to the provider.")
    return ProviderFailure("provider_stream_broken", "The connection to the provider broke mid-reply.")


def _safe_cause(exc: openai.OpenAIError) -> BaseException | None:
    # A status error's text carries the response body, which may echo the API key.
    return None if isinstance(exc, openai.APIStatusError) else exc


async def _close_stream(stream: _ChunkStream) -> None:
    # Closing the response alone leaves the SDK's own chunk generator suspended until the
    # garbage collector finalizes it on some later loop iteration; close it here, in order.
    inner = getattr(stream, "_iterator", None)
    inner_aclose = getattr(inner, "aclose", None)
    try:
        if inner_aclose is not None:
            await inner_aclose()
    finally:
        await stream.close()
