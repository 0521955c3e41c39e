"""What the lifespan creates for one worker, handed to routes as typed request state.

Every field becomes an attribute of `request.state` (Starlette's lifespan state); each
resource's dependency lives beside its type and reads its own attribute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import httpx

from avatar_chat.accounts.service import AccountService
from avatar_chat.auth.verifier import TokenVerifier
from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.avatars.service import AvatarService
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat.service import ChatService
from avatar_chat.chat.window import ConversationWindow
from avatar_chat.conversations.service import ConversationService
from avatar_chat.core.database import Database
from avatar_chat.core.metrics import Metrics
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider
from avatar_chat.ops.workers import WorkerHeartbeat
from avatar_chat.storage.base import ObjectStore
from avatar_chat.web.service import WebClient


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
    conversations: ConversationService
    chat: ChatService
    schema_version: str  # the newest migration this build ships; /ready checks for it
    metrics: Metrics  # this app's Prometheus metrics (all workers' at /metrics)
    web: WebClient  # /app's config.json and dev sign-in

    def as_request_state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
