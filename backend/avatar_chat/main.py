"""The FastAPI application factory: `uvicorn avatar_chat.main:create_app --factory`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from avatar_chat.accounts.router import router as accounts_router
from avatar_chat.avatars.card import CARD_MAX_BYTES
from avatar_chat.avatars.router import CARD_PATH, IMAGE_PATH
from avatar_chat.avatars.router import router as avatars_router
from avatar_chat.chat.metrics import ChatMetrics
from avatar_chat.chat.router import router as chat_router
from avatar_chat.conversations.router import router as conversations_router
from avatar_chat.core.body_limit import BodySizeLimitMiddleware
from avatar_chat.core.cors import with_cors
from avatar_chat.core.errors import install_error_handlers
from avatar_chat.core.metrics import Metrics
from avatar_chat.core.observability import ObservedFastAPI, RequestObserver
from avatar_chat.core.openapi import describe_error_codes
from avatar_chat.core.settings import Settings
from avatar_chat.health.router import router as health_router
from avatar_chat.portability.router import IMPORT_PATH
from avatar_chat.portability.router import router as portability_router
from avatar_chat.state import open_app_state
from avatar_chat.storage.router import router as storage_router
from avatar_chat.usage.router import router as usage_router
from avatar_chat.web.router import PREFIX as WEB_PREFIX
from avatar_chat.web.router import ClientFiles
from avatar_chat.web.router import router as web_router

log = logging.getLogger(__name__)


_ROUTE_OPTIONS = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in {"self", "path", "endpoint", "route_class_override"}
)


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes as the app's own. `include_router` keeps a router as a nested
    one that FastAPI walks on every request (about a tenth of a persona switch's CPU);
    each domain still declares its routes on its own APIRouter (prefix and tags applied)."""
    for route in router.routes:
        assert isinstance(route, APIRoute), route
        options = {name: getattr(route, name) for name in _ROUTE_OPTIONS if hasattr(route, name)}
        app.router.add_api_route(route.path, route.endpoint, route_class_override=type(route), **options)


# Routes are matched in order: the hot ones (a chat turn, the persona switch) first.
ROUTERS = (
    chat_router,
    avatars_router,
    conversations_router,
    accounts_router,
    usage_router,
    portability_router,
    storage_router,
    health_router,
    web_router,
)


# The domains operations are grouped by (one tag each): what a client generator makes its
# API classes of.
OPENAPI_TAGS = [
    {"name": "avatars", "description": "My avatar: its persona and versions, its image, character cards."},
    {"name": "conversations", "description": "Conversations and their messages, read."},
    {"name": "chat", "description": "Sending messages; the replies streamed, stopped, regenerated, edited."},
    {"name": "account", "description": "My account: usage against my plan, export, import, deletion."},
    {"name": "storage", "description": "Images of the local store, by signed URL (as Supabase Storage)."},
    {"name": "health", "description": "Liveness and readiness, for load balancers and orchestrators."},
]


def _with_error_codes(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema, built once, with each error response's codes (core/openapi.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            describe_error_codes(build())
        return build()

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics(enabled=settings.metrics_enabled)
    chat_metrics = ChatMetrics.registered(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            state = await open_app_state(settings, metrics, chat_metrics, stack)
            app.state.resources = state  # for tests and operators' tooling; routes use request.state
            yield state.as_request_state()

    app = ObservedFastAPI(
        # Outermost, around everything: request ids, the access log, request metrics, /metrics.
        # Inside it, CORS: preflights are answered before anything else runs, and every
        # answer (a 413 from the body limit, a 500) carries the CORS headers.
        observe=lambda inner: RequestObserver(with_cors(inner, settings), metrics, settings),
        title="Avatar chat backend",
        version="1.0.0",
        summary="AI-avatar chat on Supabase: personas switched live, streamed replies, no lost messages.",
        description="Each signed-in user (a Supabase Auth access token, `Authorization: Bearer`) owns an AI "
        "avatar, switches its persona live and chats with it; replies stream as server-sent events. Every "
        'error has one shape, `{"error": {"code", "message", "details", "request_id"}}`, with a '
        "stable machine-readable `code`. The guide: docs/api.md in the repository.",
        contact={"name": "The avatar-chat maintainers (see the README)"},
        # Relative: the schema describes whichever deployment serves it.
        servers=[{"url": "/", "description": "The deployment serving this schema"}],
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
        # FastAPI's built-in OpenTelemetry looks up the global providers on every request;
        # this service exports nothing through it (its metrics are its own).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.openapi = _with_error_codes(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides={
            ("PUT", IMAGE_PATH): settings.avatar_image_max_bytes,
            # A card as JSON (CARD_MAX_BYTES) or as a PNG (an image); the route checks which.
            ("POST", CARD_PATH): max(settings.avatar_image_max_bytes, CARD_MAX_BYTES),
            ("POST", IMPORT_PATH): settings.import_max_bytes,
        },
    )
    for router in ROUTERS:
        _add_routes(app, router)
    app.mount(WEB_PREFIX, ClientFiles(settings), name="web")  # /app/ is its index.html
    return app
