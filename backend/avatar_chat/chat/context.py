"""What every step of a turn works with: one worker's resources, its settings and the
chat's counters, built once by ChatService and handed to each step."""

from __future__ import annotations

from dataclasses import dataclass

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat.metrics import ChatMetrics, ChatStats
from avatar_chat.chat.window import ConversationWindow
from avatar_chat.core.database import Database
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider


@dataclass(frozen=True, slots=True)
class ChatContext:
    db: Database
    store: SessionStore[AvatarSnapshot, ConversationWindow]
    llm: LLMProvider
    tasks: TaskTracker
    settings: Settings
    metrics: ChatMetrics
    stats: ChatStats
