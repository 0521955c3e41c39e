"""How a route gets this worker's ChatService (`Chat`; the send route, the hottest,
calls `chat_service.of(request)` instead of resolving a dependency)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.chat.service import ChatService
from avatar_chat.core.dependencies import StateDependency

chat_service = StateDependency[ChatService]("chat")
Chat = Annotated[ChatService, Depends(chat_service)]
