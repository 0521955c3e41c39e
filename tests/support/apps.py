"""Apps (workers) in-process with settings of their own, and clients of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.state import AppState


async def app_with_provider(
    settings: Settings, base_url: str, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "llm_base_url": base_url,
            "llm_api_key": SecretStr("test-key"),
            "llm_timeout_s": 0.5,
            "llm_stall_timeout_s": 0.5,
            "llm_max_retries": 1,
            **overrides,
        }
    )
    async with own_app(configured) as (client, _):
        yield client


@asynccontextmanager
async def own_app(
    settings: Settings, *, base_url: str = "http://test", **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """An app (a worker) of its own, with these settings changed, and a client of it."""
    app = create_app(settings.model_copy(update=overrides))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client, app.state.resources
