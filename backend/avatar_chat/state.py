"""What the lifespan creates for one worker, handed to routes as typed request state.

Every field becomes an attribute of `request.state` (Starlette's lifespan state); each
domain's `dependencies.py` reads its own attribute. `open_app_state` makes them in order,
each closed by the exit stack in reverse (replies and post-commit work finish before the
pool closes).
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from avatar_chat.accounts.service import AccountService
from avatar_chat.auth.verifier import TokenVerifier
from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.avatars.service import AvatarService
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat.metrics import ChatMetrics
from avatar_chat.chat.moderation import create_moderator
from avatar_chat.chat.service import ChatService
from avatar_chat.chat.window import ConversationWindow
from avatar_chat.conversations.service import ConversationService
from avatar_chat.core.database import Database
from avatar_chat.core.metrics import Metrics
from avatar_chat.core.observability import serves_metrics_on_api_port
from avatar_chat.core.settings import Settings
from avatar_chat.core.supabase import create_service_client
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider
from avatar_chat.llm.factory import create_provider
from avatar_chat.ops import runtime
from avatar_chat.ops.limits import configure_database_limits
from avatar_chat.ops.migrate import expected_version
from avatar_chat.ops.workers import WorkerHeartbeat
from avatar_chat.portability.service import PortabilityService
from avatar_chat.storage.base import ObjectStore
from avatar_chat.storage.factory import create_store
from avatar_chat.web.service import WebClient, create_web_client

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AppState:
    settings: Settings
    db: Database
    store: SessionStore[AvatarSnapshot, ConversationWindow]
    http: httpx.AsyncClient
    verifier: TokenVerifier
    llm: LLMProvider
    tasks: TaskTracker
    heartbeat: WorkerHeartbeat
    images: ObjectStore
    avatars: AvatarService
    accounts: AccountService
    portability: PortabilityService
    conversations: ConversationService
    chat: ChatService
    schema_version: str  # the newest migration this build ships; /ready checks for it
    metrics: Metrics  # this app's Prometheus metrics (all workers' at /metrics)
    web: WebClient  # /app's config.json and dev sign-in

    def as_request_state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


async def open_app_state(
    settings: Settings, metrics: Metrics, chat_metrics: ChatMetrics, stack: AsyncExitStack
) -> AppState:
    rt = await runtime.prepare(settings)
    stack.push_async_callback(rt.close)
    db = await _open_database(rt.dsn, settings, metrics, stack)
    http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
    stack.push_async_callback(http.aclose)
    store = await _open_store(settings, metrics, stack)
    heartbeat = WorkerHeartbeat(db, ttl_s=settings.worker_ttl_s)
    await heartbeat.start()
    stack.push_async_callback(heartbeat.close)
    llm = create_provider(settings)
    stack.push_async_callback(llm.aclose)
    moderator = create_moderator(settings)
    if moderator is not None:
        stack.push_async_callback(moderator.aclose)
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
    return AppState(
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
        portability=PortabilityService(db, images, settings, worker_id=heartbeat.live_id),
        conversations=ConversationService(db, store),
        chat=ChatService(
            db,
            store,
            llm,
            tasks,
            settings,
            worker_id=heartbeat.live_id,
            metrics=chat_metrics,
            moderator=moderator,
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


async def _open_database(dsn: str, settings: Settings, metrics: Metrics, stack: AsyncExitStack) -> Database:
    db = await Database.connect(dsn, settings, metrics=metrics.pool)
    stack.push_async_callback(db.close)
    metrics.watch_pool(db.pool.get_size, db.pool.get_idle_size, settings.db_pool_max_size)
    await configure_database_limits(db, settings)
    return db


async def _open_store(
    settings: Settings, metrics: Metrics, stack: AsyncExitStack
) -> SessionStore[AvatarSnapshot, ConversationWindow]:
    """The SessionStore, and the sampling of the gauges (pool, store) for /metrics."""
    store: SessionStore[AvatarSnapshot, ConversationWindow] = SessionStore(
        max_avatars=settings.session_store_max_avatars,
        max_conversations=settings.session_store_max_conversations,
        metrics=metrics.store,
    )
    metrics.watch_store(lambda: store.avatar_count, lambda: store.window_count)
    await stack.enter_async_context(metrics.sampling())
    if metrics.enabled and settings.metrics_port is None and not serves_metrics_on_api_port(settings):
        log.warning("GET /metrics is closed in production: set METRICS_TOKEN or METRICS_PORT")
    return store
