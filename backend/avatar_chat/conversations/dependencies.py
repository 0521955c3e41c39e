"""How a route gets this worker's ConversationService (`Conversations`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from avatar_chat.conversations.service import ConversationService
from avatar_chat.core.dependencies import StateDependency

conversation_service = StateDependency[ConversationService]("conversations")
Conversations = Annotated[ConversationService, Depends(conversation_service)]
