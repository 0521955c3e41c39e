"""Fixtures for the chat tests: a fake OpenAI-compatible server, and the app using it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from avatar_chat.core.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.apps import app_with_provider


@pytest.fixture(scope="session")
async def fake_llm() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
async def llm_client(settings: Settings, fake_llm: FakeOpenAIServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in app_with_provider(settings, fake_llm.base_url):
        yield client


@pytest.fixture
def fake(fake_llm: FakeOpenAIServer) -> FakeOpenAIServer:
    fake_llm.reset()
    fake_llm.default_scenario = "ok"
    return fake_llm
