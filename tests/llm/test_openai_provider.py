"""OpenAIProvider against a real HTTP server speaking the OpenAI streaming protocol."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.llm.base import ChatRequest, PromptMessage, ProviderFailure
from avatar_chat.llm.openai_provider import OpenAIProvider
from tests.fakes.openai_server import FakeOpenAIServer, reply_text
from tests.support.factories import avatar_snapshot

API_KEY = "test-key"
MakeProvider = Callable[..., OpenAIProvider]


@pytest.fixture(scope="module")
async def fake_llm() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(fake_llm: FakeOpenAIServer) -> None:
    fake_llm.reset()


@pytest.fixture
async def make_provider(fake_llm: FakeOpenAIServer) -> AsyncIterator[MakeProvider]:
    providers: list[OpenAIProvider] = []

    def make(**overrides: Any) -> OpenAIProvider:
        values: dict[str, Any] = {
            "llm_base_url": fake_llm.base_url,
            "llm_api_key": SecretStr(API_KEY),
            "llm_model": "fake-model",
            "llm_max_retries": 1,
            "llm_timeout_s": 5.0,
            "llm_stall_timeout_s": 5.0,
            "llm_max_tokens": 256,
        } | overrides
        provider = OpenAIProvider(Settings(_env_file=None, **values))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


def chat_request(user_message: str) -> ChatRequest:
    avatar = avatar_snapshot(name="Ada", personality="curious", backstory="Grew up among looms.")
    return ChatRequest(
        avatar=avatar,
        mode="chat",
        messages=(
            PromptMessage("system", "You are Ada.\nStay in character."),
            PromptMessage("user", "Hi"),
            PromptMessage("assistant", "Hello there!"),
            PromptMessage("user", user_message),
        ),
    )


async def failure_after(provider: OpenAIProvider, request: ChatRequest, chunks: list[str]) -> ProviderFailure:
    """Stream into `chunks` until the provider fails; the failure."""
    try:
        async for chunk in provider.stream(request):
            chunks.append(chunk)
    except ProviderFailure as failure:
        return failure
    pytest.fail("the stream ended without a failure")


async def test_streams_the_reply_and_sends_the_prompt(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(llm_max_tokens=77)
    request = chat_request("How are looms threaded?")

    chunks = [chunk async for chunk in provider.stream(request)]

    assert "".join(chunks) == reply_text("How are looms threaded?")
    assert len(chunks) >= 3
    assert all(chunks)
    [sent] = fake_llm.requests
    assert sent["model"] == "fake-model"
    assert sent["stream"] is True
    assert sent["max_tokens"] == 77
    assert sent["messages"] == [{"role": m.role, "content": m.content} for m in request.messages]
    assert fake_llm.request_headers[0]["authorization"] == f"Bearer {API_KEY}"


async def test_a_slow_but_steady_stream_is_not_a_stall(make_provider: MakeProvider) -> None:
    provider = make_provider(llm_stall_timeout_s=0.5)

    chunks = [chunk async for chunk in provider.stream(chat_request("[[fake:slow]] hi"))]

    assert "".join(chunks) == reply_text("hi")


@pytest.mark.parametrize(
    ("scenario", "code"),
    [("status_429", "provider_rate_limited"), ("status_500", "provider_error")],
)
async def test_retryable_statuses_fail_once_retries_are_spent(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider, scenario: str, code: str
) -> None:
    provider = make_provider(llm_max_retries=2)

    failure = await failure_after(provider, chat_request(f"[[fake:{scenario}]] hi"), [])

    assert failure.code == code
    assert not failure.timeout
    assert f"HTTP {scenario.removeprefix('status_')}" in failure.message
    assert len(fake_llm.requests) == 1 + 2


async def test_a_retry_rescues_a_failed_first_attempt(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(llm_max_retries=1)
    fake_llm.fail_next(1, 500)

    chunks = [chunk async for chunk in provider.stream(chat_request("again"))]

    assert "".join(chunks) == reply_text("again")
    assert len(fake_llm.requests) == 2
    assert fake_llm.requests[0] == fake_llm.requests[1]


async def test_fail_times_marker_counts_per_message(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(llm_max_retries=2)
    message = f"[[fake:fail_times:2:429]] {uuid.uuid4()}"

    chunks = [chunk async for chunk in provider.stream(chat_request(message))]

    assert "".join(chunks) == reply_text(message)
    assert len(fake_llm.requests) == 3


async def test_bad_credentials_fail_at_once_without_leaking_the_key(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(llm_max_retries=2)

    failure = await failure_after(provider, chat_request("[[fake:status_401]] hi"), [])

    assert failure.code == "provider_auth_failed"
    assert len(fake_llm.requests) == 1
    assert "HTTP 401" in failure.message
    seen: BaseException | None = failure
    while seen is not None:  # the whole chain, as a logged traceback would show it
        assert API_KEY not in str(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)


async def test_nothing_listening_is_unreachable(make_provider: MakeProvider) -> None:
    provider = make_provider(llm_base_url=FakeOpenAIServer.refused_url(), llm_max_retries=0)

    failure = await failure_after(provider, chat_request("anyone there?"), [])

    assert failure.code == "provider_unreachable"
    assert not failure.timeout


@pytest.mark.parametrize("scenario", ["first_token_delay", "hang"])
async def test_no_first_token_in_time_is_a_timeout(make_provider: MakeProvider, scenario: str) -> None:
    provider = make_provider(llm_timeout_s=0.5)
    started = time.monotonic()

    failure = await failure_after(provider, chat_request(f"[[fake:{scenario}]] hi"), [])

    assert failure.code == "provider_timeout"
    assert failure.timeout
    assert 0.4 < time.monotonic() - started < 3


async def test_a_stream_gone_quiet_is_a_stall(make_provider: MakeProvider) -> None:
    provider = make_provider(llm_stall_timeout_s=0.5)
    chunks: list[str] = []
    started = time.monotonic()

    failure = await failure_after(provider, chat_request("[[fake:stall]] hi"), chunks)

    assert failure.code == "provider_stalled"
    assert failure.timeout
    assert len(chunks) == 2
    assert time.monotonic() - started < 3


async def test_a_dropped_connection_is_a_broken_stream(make_provider: MakeProvider) -> None:
    provider = make_provider(llm_max_retries=2)
    chunks: list[str] = []

    failure = await failure_after(provider, chat_request("[[fake:break]] hi"), chunks)

    assert failure.code == "provider_stream_broken"
    assert not failure.timeout
    assert len(chunks) == 2


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ("malformed", "provider_bad_response"),
        ("no_choices", "provider_bad_response"),
        ("stream_error", "provider_error"),
    ],
)
async def test_a_bad_chunk_mid_stream_fails_the_reply(
    make_provider: MakeProvider, scenario: str, code: str
) -> None:
    provider = make_provider(llm_max_retries=2)
    chunks: list[str] = []

    failure = await failure_after(provider, chat_request(f"[[fake:{scenario}]] hi"), chunks)

    assert failure.code == code
    assert len(chunks) == 1


async def test_a_stream_without_text_is_an_empty_reply(make_provider: MakeProvider) -> None:
    provider = make_provider()
    chunks: list[str] = []

    failure = await failure_after(provider, chat_request("[[fake:empty]] hi"), chunks)

    assert failure.code == "provider_empty_reply"
    assert chunks == []


async def _settled(fake_llm: FakeOpenAIServer, before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """Tasks started since `before` that are still running once the fake has hung up."""
    deadline = time.monotonic() + 2
    while True:
        leftover = {task for task in asyncio.all_tasks() - before if not task.done()}
        if (fake_llm.open_streams == 0 and not leftover) or time.monotonic() > deadline:
            return leftover
        await asyncio.sleep(0.01)


async def test_leaving_early_closes_the_stream(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    before = asyncio.all_tasks()
    # `stall` would hold the server's side open for 10 s: only a real hang-up ends it sooner.
    stream = provider.stream(chat_request("[[fake:stall]] hi"))

    async for chunk in stream:
        assert chunk
        break
    await stream.aclose()

    assert await _settled(fake_llm, before) == set()
    assert fake_llm.open_streams == 0
    # The connection pool is fine afterwards.
    assert "".join([c async for c in provider.stream(chat_request("after"))]) == reply_text("after")


async def test_cancellation_propagates_and_closes_the_stream(
    fake_llm: FakeOpenAIServer, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    before = asyncio.all_tasks()
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(chat_request("[[fake:stall]] hi")):
            first_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), timeout=2)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert await _settled(fake_llm, before) == set()
    assert fake_llm.open_streams == 0


async def test_aclose_closes_the_client(make_provider: MakeProvider) -> None:
    provider = make_provider()

    await provider.aclose()

    assert provider._client.is_closed()


async def test_fake_answers_non_streaming_requests(fake_llm: FakeOpenAIServer) -> None:
    async with httpx.AsyncClient(base_url=fake_llm.base_url) as client:
        response = await client.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "plain"}]},
        )

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == reply_text("plain")
