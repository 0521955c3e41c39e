"""The OpenAI and Llama Guard moderators against their HTTP APIs, faked with respx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from avatar_chat.safety.base import ModerationUnavailable
from avatar_chat.safety.llama_guard import LlamaGuardModerator
from avatar_chat.safety.openai_moderation import OpenAIModerator
from tests.fakes.moderation_answers import SCORES, chat_body, moderation_body

OPENAI_URL = "https://moderation.test/v1"
GUARD_URL = "http://guard.test/v1"
API_KEY = "sk-test-secret-key"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
async def openai_moderator() -> AsyncIterator[OpenAIModerator]:
    moderator = OpenAIModerator(api_key=API_KEY, base_url=OPENAI_URL, timeout_s=0.5, max_retries=1)
    yield moderator
    await moderator.aclose()


@pytest.fixture
async def guard() -> AsyncIterator[LlamaGuardModerator]:
    moderator = LlamaGuardModerator(base_url=GUARD_URL, model="llama-guard3:8b", timeout_s=0.5, max_retries=1)
    yield moderator
    await moderator.aclose()


# --- OpenAI ---------------------------------------------------------------------------


async def test_openai_flagged(router: respx.MockRouter, openai_moderator: OpenAIModerator) -> None:
    route = router.post(f"{OPENAI_URL}/moderations").respond(200, json=moderation_body(flagged=True))
    result = await openai_moderator.check("I want to end it")
    assert result.flagged
    assert result.provider == "openai"
    assert result.flagged_categories == {"self-harm", "self-harm/intent"}
    assert result.categories == SCORES
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(request.content) == {"model": "omni-moderation-latest", "input": "I want to end it"}


async def test_openai_not_flagged(router: respx.MockRouter, openai_moderator: OpenAIModerator) -> None:
    router.post(f"{OPENAI_URL}/moderations").respond(200, json=moderation_body(flagged=False))
    result = await openai_moderator.check("hello")
    assert not result.flagged
    assert result.flagged_categories == frozenset()
    assert set(result.categories) == set(SCORES)


async def test_openai_retries_a_5xx_then_answers(
    router: respx.MockRouter, openai_moderator: OpenAIModerator
) -> None:
    route = router.post(f"{OPENAI_URL}/moderations").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=moderation_body(flagged=False))]
    )
    assert not (await openai_moderator.check("hello")).flagged
    assert route.call_count == 2


async def test_openai_500_is_unavailable(router: respx.MockRouter, openai_moderator: OpenAIModerator) -> None:
    route = router.post(f"{OPENAI_URL}/moderations").respond(500, text=f"boom, key {API_KEY}")
    with pytest.raises(ModerationUnavailable) as caught:
        await openai_moderator.check("hello")
    assert caught.value.provider == "openai"
    assert not caught.value.timeout
    assert "HTTP 500" in caught.value.message
    assert API_KEY not in caught.value.message
    assert route.call_count == 2  # one retry


async def test_an_error_body_echoing_the_text_never_reaches_the_message(
    router: respx.MockRouter, openai_moderator: OpenAIModerator
) -> None:
    secret_text = "my private words about something"
    router.post(f"{OPENAI_URL}/moderations").respond(
        400, json={"error": {"message": f"bad input: {secret_text}"}}
    )
    with pytest.raises(ModerationUnavailable) as caught:
        await openai_moderator.check(secret_text)
    assert secret_text not in caught.value.message and "private" not in str(caught.value)
    assert "HTTP 400" in caught.value.message


async def test_openai_401_is_not_retried(router: respx.MockRouter, openai_moderator: OpenAIModerator) -> None:
    route = router.post(f"{OPENAI_URL}/moderations").respond(401, json={"error": {"message": "bad key"}})
    with pytest.raises(ModerationUnavailable, match="HTTP 401"):
        await openai_moderator.check("hello")
    assert route.call_count == 1


async def test_openai_transport_timeout_is_unavailable(
    router: respx.MockRouter, openai_moderator: OpenAIModerator
) -> None:
    router.post(f"{OPENAI_URL}/moderations").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ModerationUnavailable) as caught:
        await openai_moderator.check("hello")
    assert caught.value.timeout


async def test_openai_deadline_is_unavailable(
    router: respx.MockRouter, openai_moderator: OpenAIModerator
) -> None:
    """A server that never answers: our own deadline (0.5 s here) ends the wait."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=moderation_body(flagged=False))

    router.post(f"{OPENAI_URL}/moderations").mock(side_effect=hang)
    with pytest.raises(ModerationUnavailable) as caught:
        await openai_moderator.check("hello")
    assert caught.value.timeout


async def test_openai_connection_error_is_unavailable(
    router: respx.MockRouter, openai_moderator: OpenAIModerator
) -> None:
    router.post(f"{OPENAI_URL}/moderations").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ModerationUnavailable, match="could not reach"):
        await openai_moderator.check("hello")


@pytest.mark.parametrize(
    "answer",
    [
        b"<html>not json</html>",
        b"{}",
        b'{"results": []}',
        b'{"results": [{"flagged": "yes", "categories": {}, "category_scores": {}}]}',
        b'{"results": [{"flagged": true, "categories": {}, "category_scores": {"sexual": "high"}}]}',
        b'{"results": [{"flagged": true, "categories": {}, "category_scores": {"sexual": true}}]}',
        b'{"results": [{"flagged": true, "categories": {"sexual": true}}]}',
        b"[1, 2]",
    ],
)
async def test_openai_malformed_answer_is_unavailable(
    router: respx.MockRouter, openai_moderator: OpenAIModerator, answer: bytes
) -> None:
    router.post(f"{OPENAI_URL}/moderations").respond(200, content=answer)
    with pytest.raises(ModerationUnavailable):
        await openai_moderator.check("hello")


async def test_openai_default_base_url_and_model(router: respx.MockRouter) -> None:
    route = router.post("https://api.openai.com/v1/moderations").respond(
        200, json=moderation_body(flagged=False)
    )
    moderator = OpenAIModerator(api_key=API_KEY)
    try:
        await moderator.check("hi")
    finally:
        await moderator.aclose()
    assert json.loads(route.calls.last.request.content)["model"] == "omni-moderation-latest"


# --- Llama Guard ----------------------------------------------------------------------


async def test_guard_safe(router: respx.MockRouter, guard: LlamaGuardModerator) -> None:
    route = router.post(f"{GUARD_URL}/chat/completions").respond(200, json=chat_body("safe"))
    result = await guard.check("hello there")
    assert not result.flagged
    assert result.provider == "llama-guard"
    assert result.flagged_categories == frozenset()
    assert not any(result.categories.values())
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "llama-guard3:8b"
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert body["stream"] is False
    assert "authorization" not in route.calls.last.request.headers


async def test_guard_unsafe_s11(router: respx.MockRouter, guard: LlamaGuardModerator) -> None:
    router.post(f"{GUARD_URL}/chat/completions").respond(200, json=chat_body("unsafe\nS11"))
    result = await guard.check("...")
    assert result.flagged
    assert result.flagged_categories == {"self-harm", "self-harm/intent"}
    assert result.categories["self-harm"] == 1.0
    assert result.categories["sexual"] == 0.0


@pytest.mark.parametrize("verdict", ["unsafe\nS12,S1", "\n\nunsafe\nS12, S1\n", "Unsafe\ns12,s1"])
async def test_guard_unsafe_several_codes(
    router: respx.MockRouter, guard: LlamaGuardModerator, verdict: str
) -> None:
    router.post(f"{GUARD_URL}/chat/completions").respond(200, json=chat_body(verdict))
    result = await guard.check("...")
    assert result.flagged
    assert result.flagged_categories == {"sexual", "violence", "illicit/violent"}
    assert {c for c, score in result.categories.items() if score == 1.0} == result.flagged_categories


async def test_guard_unknown_code_is_kept(router: respx.MockRouter, guard: LlamaGuardModerator) -> None:
    router.post(f"{GUARD_URL}/chat/completions").respond(200, json=chat_body("unsafe\nS15"))
    result = await guard.check("...")
    assert result.flagged_categories == {"llama-guard/S15"}


@pytest.mark.parametrize(
    "content", ["I cannot help with that.", "unsafe", "unsafe\nviolence", "safe\nS1", "", None, 42]
)
async def test_guard_garbage_is_unavailable(
    router: respx.MockRouter, guard: LlamaGuardModerator, content: Any
) -> None:
    router.post(f"{GUARD_URL}/chat/completions").respond(200, json=chat_body(content))
    with pytest.raises(ModerationUnavailable) as caught:
        await guard.check("...")
    assert caught.value.provider == "llama-guard"


@pytest.mark.parametrize("answer", [b"not json", b'{"choices": []}', b'{"error": "x"}'])
async def test_guard_malformed_answer_is_unavailable(
    router: respx.MockRouter, guard: LlamaGuardModerator, answer: bytes
) -> None:
    router.post(f"{GUARD_URL}/chat/completions").respond(200, content=answer)
    with pytest.raises(ModerationUnavailable):
        await guard.check("...")


@pytest.mark.parametrize("status", [400, 404, 429, 500, 502])
async def test_guard_http_error_is_unavailable(
    router: respx.MockRouter, guard: LlamaGuardModerator, status: int
) -> None:
    router.post(f"{GUARD_URL}/chat/completions").respond(status, json={"error": {"message": "nope"}})
    with pytest.raises(ModerationUnavailable, match=f"HTTP {status}"):
        await guard.check("...")


async def test_guard_sends_the_key_when_given(router: respx.MockRouter) -> None:
    route = router.post(f"{GUARD_URL}/chat/completions").respond(200, json=chat_body("safe"))
    moderator = LlamaGuardModerator(base_url=GUARD_URL, api_key=API_KEY)
    try:
        await moderator.check("hi")
    finally:
        await moderator.aclose()
    assert route.calls.last.request.headers["authorization"] == f"Bearer {API_KEY}"
