"""Conversation routes and message history: HTTP in, service call, HTTP out."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.conversations.schemas import (
    PAGE_MAX,
    ConversationCreate,
    ConversationPage,
    ConversationRead,
    ConversationUpdate,
    MessagePage,
)
from avatar_chat.conversations.service import Conversations
from avatar_chat.core.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    responses,
)

router = APIRouter(prefix="/conversations", tags=["conversations"])

_COMMON = (Unauthorized, Forbidden, ValidationFailed, ServiceUnavailable)
# Routes that read a JSON body: it may not parse (e.g. not UTF-8), or be over MAX_BODY_BYTES.
_BODY = (BadRequest, PayloadTooLarge)
PageLimit = Annotated[int, Query(ge=1, le=PAGE_MAX, description=f"Page size, 1-{PAGE_MAX}.")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*_COMMON, *_BODY),
    summary="Start a conversation",
)
async def create_conversation(
    body: ConversationCreate, user: CurrentUser, service: Conversations, response: Response
) -> ConversationRead:
    conversation = await service.create(user, body)
    response.headers["Location"] = f"/conversations/{conversation.id}"
    return conversation


@router.get("", responses=responses(*_COMMON, BadRequest), summary="My conversations, newest first")
async def list_conversations(
    user: CurrentUser,
    service: Conversations,
    limit: PageLimit = 20,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> ConversationPage:
    return await service.list(user, limit=limit, cursor=cursor)


@router.get("/{conversation_id}", responses=responses(*_COMMON, NotFound), summary="One conversation")
async def get_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, service: Conversations
) -> ConversationRead:
    return await service.get(user, conversation_id)


@router.patch(
    "/{conversation_id}",
    responses=responses(*_COMMON, *_BODY, NotFound),
    summary="Switch mode or rename (next turn uses it)",
)
async def update_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, user: CurrentUser, service: Conversations
) -> ConversationRead:
    return await service.update(user, conversation_id, body)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*_COMMON, NotFound),
    summary="Delete a conversation and its messages",
)
async def delete_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, service: Conversations
) -> Response:
    await service.delete(user, conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{conversation_id}/messages",
    responses=responses(*_COMMON, NotFound, BadRequest),
    summary="History by seq (ascending), paginated",
)
async def list_messages(
    conversation_id: uuid.UUID,
    user: CurrentUser,
    service: Conversations,
    limit: PageLimit = 50,
    after: Annotated[int | None, Query(ge=0, le=2**53, description="Messages with seq > after.")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=2**53, description="The latest messages with seq < before.")
    ] = None,
) -> MessagePage:
    return await service.messages(user, conversation_id, after=after, before=before, limit=limit)
