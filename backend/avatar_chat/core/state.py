"""Resources owned by the lifespan, handed to routes through typed dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request

from avatar_chat.auth.verifier import TokenVerifier
from avatar_chat.chat.turns import ChatService
from avatar_chat.core.database import Database
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.llm.base import LLMProvider
from avatar_chat.sessions.listener import InvalidationListener
from avatar_chat.sessions.store import SessionStore


@dataclass(slots=True)
class AppState:
    settings: Settings
    db: Database
    store: SessionStore
    http: httpx.AsyncClient
    verifier: TokenVerifier
    llm: LLMProvider
    tasks: TaskTracker
    listener: InvalidationListener
    chat: ChatService
    schema_version: str | None = None  # the newest migration this build expects


async def get_state(request: Request) -> AppState:
    state: AppState = request.state.app
    return state


State = Annotated[AppState, Depends(get_state)]
