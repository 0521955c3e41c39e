"""The fake OpenAI-compatible LLM server (tests/fakes/openai_server.py) as a fixture.

tests/conftest.py serves one for the whole session as `fake_llm` (with `fake`, the same
server reset for each test); a module that wants a server of its own declares
`fake_llm = pytest.fixture(scope="module")(serve_fake_llm)`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tests.fakes.openai_server import FakeOpenAIServer


async def serve_fake_llm() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server
