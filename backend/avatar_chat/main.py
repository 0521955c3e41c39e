"""The FastAPI application factory: `uvicorn avatar_chat.main:create_app --factory`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from avatar_chat.accounts.router import router as accounts_router
from avatar_chat.accounts.service import AccountService
from avatar_chat.auth.verifier import TokenVerifier
from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.avatars.router import IMAGE_PATH
from avatar_chat.avatars.router import router as avatars_router
from avatar_chat.avatars.service import AvatarService
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat.metrics import ChatMetrics
from avatar_chat.chat.router import router as chat_router
from avatar_chat.chat.service import ChatService
from avatar_chat.chat.window import ConversationWindow
from avatar_chat.conversations.router import router as conversations_router
from avatar_chat.conversations.service import ConversationService
from avatar_chat.core.body_limit import BodySizeLimitMiddleware
from avatar_chat.core.cors import with_cors
from avatar_chat.core.database import Database
from avatar_chat.core.errors import install_error_handlers
from avatar_chat.core.metrics import Metrics
from avatar_chat.core.observability import ObservedFastAPI, RequestObserver, serves_metrics_on_api_port
from avatar_chat.core.settings import Settings
from avatar_chat.core.supabase import create_service_client
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.health.router import router as health_router
from avatar_chat.llm.factory import create_provider
from avatar_chat.ops import runtime
from avatar_chat.ops.limits import configure_database_limits
from avatar_chat.ops.migrate import expected_version
from avatar_chat.ops.workers import WorkerHeartbeat
from avatar_chat.state import AppState
from avatar_chat.storage.factory import create_store
from avatar_chat.storage.router import router as storage_router
from avatar_chat.web.router import PREFIX as WEB_PREFIX
from avatar_chat.web.router import ClientFiles
from avatar_chat.web.router import router as web_router
from avatar_chat.web.service import create_web_client

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
    storage_router,
    health_router,
    web_router,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics(enabled=settings.metrics_enabled)
    chat_metrics = ChatMetrics.registered(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            rt = await runtime.prepare(settings)
            stack.push_async_callback(rt.close)
            db = await Database.connect(rt.dsn, settings, metrics=metrics.pool)
            stack.push_async_callback(db.close)
            metrics.watch_pool(db.pool.get_size, db.pool.get_idle_size, settings.db_pool_max_size)
            await configure_database_limits(db, settings)
            http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
            stack.push_async_callback(http.aclose)
            store: SessionStore[AvatarSnapshot, ConversationWindow] = SessionStore(
                max_avatars=settings.session_store_max_avatars,
                max_conversations=settings.session_store_max_conversations,
                metrics=metrics.store,
            )
            metrics.watch_store(lambda: store.avatar_count, lambda: store.window_count)
            await stack.enter_async_context(metrics.sampling())
            if metrics.enabled and settings.metrics_port is None and not serves_metrics_on_api_port(settings):
                log.warning("GET /metrics is closed in production: set METRICS_TOKEN or METRICS_PORT")
            heartbeat = WorkerHeartbeat(db, ttl_s=settings.worker_ttl_s)
            await heartbeat.start()
            stack.push_async_callback(heartbeat.close)
            llm = create_provider(settings)
            stack.push_async_callback(llm.aclose)
            service_client = await create_service_client(settings, http)
            images = await create_store(settings, service_client)
            tasks = TaskTracker()
            # Last in, first out: replies and post-commit work finish before the pool closes.
            stack.push_async_callback(tasks.drain, settings.shutdown_grace_s)
            avatars = AvatarService(
                db,
                store,
                images,
                tasks,
                signed_url_ttl_s=settings.storage_signed_url_ttl_s,
                image_decodes_at_once=settings.image_decodes_per_worker,
            )
            stack.callback(avatars.close)
            state = AppState(
                settings=settings,
                db=db,
                store=store,
                http=http,
                verifier=TokenVerifier(settings, http, hs256_secret=rt.jwt_secret),
                llm=llm,
                tasks=tasks,
                heartbeat=heartbeat,
                images=images,
                avatars=avatars,
                accounts=AccountService(db, store, images, service_client),
                conversations=ConversationService(db, store),
                chat=ChatService(
                    db, store, llm, tasks, settings, worker_id=heartbeat.live_id, metrics=chat_metrics
                ),
                schema_version=expected_version(),
                metrics=metrics,
                web=create_web_client(
                    settings,
                    db,
                    embedded_database=rt.embedded_database,
                    local_jwt_secret=rt.jwt_secret if rt.jwt_secret_is_local else None,
                ),
            )
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
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry looks up the global providers on every request;
        # this service exports nothing through it (its metrics are its own).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        overrides={("PUT", IMAGE_PATH): settings.avatar_image_max_bytes},
    )
    for router in ROUTERS:
        _add_routes(app, router)
    app.mount(WEB_PREFIX, ClientFiles(settings), name="web")  # /app/ is its index.html
    return app
