"""OpenAIProvider reads each streamed chunk as the JSON it is: every shape a server may send
ends as the text it holds, a skipped chunk, or one stable failure code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.llm.base import ChatRequest, PromptMessage, ProviderFailure
from avatar_chat.llm.openai_provider import OpenAIProvider
from tests.support.factories import avatar_snapshot

Serve = Callable[[list[str]], Awaitable[str]]  # the chunks' data lines -> a base URL serving them

_FIRST = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}
_LAST = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
_BAD = "provider_bad_response"

# The second chunk of a reply (after a first one with text "Hi"), and what the provider makes
# of it: the reply's chunks, or the failure's code (after "Hi").
SHAPES: list[tuple[str, object, list[str] | str]] = [
    ("text", {"choices": [{"delta": {"content": " there"}, "finish_reason": None}]}, ["Hi", " there"]),
    ("text without finish_reason", {"choices": [{"delta": {"content": "!"}}]}, ["Hi", "!"]),
    ("no choices (a usage chunk)", {"choices": [], "usage": {"total_tokens": 3}}, ["Hi"]),
    ("a role only", {"choices": [{"delta": {"role": "assistant"}}]}, ["Hi"]),
    ("empty text", {"choices": [{"delta": {"content": ""}}]}, ["Hi"]),
    ("null text", {"choices": [{"delta": {"content": None}}]}, ["Hi"]),
    ("null delta", {"choices": [{"delta": None}]}, ["Hi"]),
    ("no delta", {"choices": [{"index": 0}]}, ["Hi"]),
    ("text in a second choice only", {"choices": [{"delta": {}}, {"delta": {"content": "b"}}]}, ["Hi"]),
    ("an odd finish_reason", {"choices": [{"delta": {}, "finish_reason": 3}]}, ["Hi"]),
    ("no choices key", {"id": "chatcmpl-x"}, _BAD),
    ("null choices", {"choices": None}, _BAD),
    ("choices an object", {"choices": {"0": {}}}, _BAD),
    ("a list", [1, 2], _BAD),
    ("a string", "text", _BAD),
    # The SDK hands a `null` chunk on as None, which reads as the stream's end (as it always
    # has): the reply is what came before it.
    ("null", None, ["Hi"]),
    ("a choice that is a number", {"choices": [1]}, _BAD),
    ("a choice that is a list", {"choices": [[{"delta": {"content": "x"}}]]}, _BAD),
    ("text that is a number", {"choices": [{"delta": {"content": 5}}]}, _BAD),
    ("text that is a list", {"choices": [{"delta": {"content": ["x"]}}]}, _BAD),
    ("text that is true", {"choices": [{"delta": {"content": True}}]}, _BAD),
    # Before chunks were read as JSON this escaped as an AttributeError (a `provider_error`
    # with a logged traceback, through ReplyGenerator's catch-all).
    ("a delta that is a string", {"choices": [{"delta": "x"}]}, _BAD),
    ("an error object", {"error": {"message": "overloaded", "type": "server_error"}}, "provider_error"),
]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Servers answering every request with the given data lines, the last chunk and [DONE]."""
    servers: list[asyncio.Server] = []

    async def start(datas: list[str]) -> str:
        events = [*datas, json.dumps(_LAST), "[DONE]"]
        payload = "".join(f"data: {data}\n\n" for data in events).encode()

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _reply(base_url: str) -> list[str] | str:
    provider = OpenAIProvider(
        Settings(
            _env_file=None,
            llm_base_url=base_url,
            llm_api_key=SecretStr("test-key"),
            llm_max_retries=0,
            llm_timeout_s=5.0,
            llm_stall_timeout_s=5.0,
        )
    )
    request = ChatRequest(avatar=avatar_snapshot(), mode="companion", messages=(PromptMessage("user", "Hi"),))
    chunks: list[str] = []
    try:
        async for chunk in provider.stream(request):
            chunks.append(chunk)
    except ProviderFailure as failure:
        assert chunks == ["Hi"]
        return failure.code
    finally:
        await provider.aclose()
    return chunks


@pytest.mark.parametrize(("shape", "chunk", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_each_chunk_shape(serve: Serve, shape: str, chunk: object, expected: list[str] | str) -> None:
    assert await _reply(await serve([json.dumps(_FIRST), json.dumps(chunk)])) == expected


async def test_a_chunk_that_is_not_json_is_a_bad_response(serve: Serve) -> None:
    assert await _reply(await serve([json.dumps(_FIRST), "{not json"])) == _BAD
