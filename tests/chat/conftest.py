"""Fixtures for the chat tests: the app using the fake OpenAI-compatible server
(`fake_llm` and `fake`, one server for the session, are tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from avatar_chat.core.settings import Settings
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.apps import app_with_provider


@pytest.fixture(scope="session")
async def llm_client(settings: Settings, fake_llm: FakeOpenAIServer) -> AsyncIterator[httpx.AsyncClient]:
    async for client in app_with_provider(settings, fake_llm.base_url):
        yield client
