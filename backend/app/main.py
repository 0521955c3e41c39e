"""The FastAPI application factory: `uvicorn app.main:create_app --factory`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from app.auth.verifier import TokenVerifier
from app.avatars.router import router as avatars_router
from app.core import runtime
from app.core.database import Database
from app.core.errors import install_error_handlers
from app.core.settings import Settings
from app.core.state import AppState
from app.health.router import router as health_router
from app.sessions.store import SessionStore

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, AppState]]:
        async with AsyncExitStack() as stack:
            rt = await runtime.prepare(settings)
            stack.push_async_callback(rt.close)
            db = await Database.connect(rt.dsn, rt.settings)
            stack.push_async_callback(db.close)
            http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
            stack.push_async_callback(http.aclose)
            state = AppState(
                settings=rt.settings,
                db=db,
                store=SessionStore(
                    max_avatars=rt.settings.session_store_max_avatars,
                    max_conversations=rt.settings.session_store_max_conversations,
                ),
                http=http,
                verifier=TokenVerifier(rt.settings, http),
            )
            yield {"app": state}

    app = FastAPI(
        title="Avatar chat backend",
        version="1.0.0",
        summary="AI-avatar chat on Supabase: personas switched live, streamed replies, no lost messages.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(avatars_router)
    return app
