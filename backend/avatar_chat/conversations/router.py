"""Conversation routes and message history: HTTP in, service call, HTTP out."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.conversations.dependencies import Conversations
from avatar_chat.conversations.schemas import (
    PAGE_MAX,
    ConversationCreate,
    ConversationPage,
    ConversationRead,
    ConversationUpdate,
    MessagePage,
    MessageVariants,
)
from avatar_chat.conversations.service import CURSOR_MAX, CURSOR_MIN, CURSOR_PATTERN
from avatar_chat.core.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    BadRequest,
    NotFound,
    responses,
)
from avatar_chat.core.http import page_cursor, page_limit
from avatar_chat.core.openapi import LOCATION_HEADER, answer, body

router = APIRouter(prefix="/conversations", tags=["conversations"])

PageLimit = Annotated[int, page_limit(PAGE_MAX)]

# What an answer holding a conversation feeds: read, change, delete it, its history, a send.
_CONVERSATION = {"path.conversation_id": body("/id")}
_CONVERSATION_ANSWER = answer(
    getConversation=_CONVERSATION,
    updateConversation=_CONVERSATION,
    deleteConversation=_CONVERSATION,
    listMessages=_CONVERSATION,
    sendMessage=_CONVERSATION,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        **responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS),
        201: {**_CONVERSATION_ANSWER, "headers": dict(LOCATION_HEADER)},
    },
    summary="Start a conversation",
    operation_id="createConversation",
)
async def create_conversation(
    body: ConversationCreate, user: CurrentUser, service: Conversations, response: Response
) -> ConversationRead:
    """Starts a conversation in a mode (the avatar's persona answers in it)."""
    conversation = await service.create(user, body)
    response.headers["Location"] = f"/conversations/{conversation.id}"
    return conversation


@router.get(
    "",
    responses=responses(*AUTHENTICATED_ERRORS, BadRequest),
    summary="My conversations, newest first",
    operation_id="listConversations",
)
async def list_conversations(
    user: CurrentUser,
    service: Conversations,
    limit: PageLimit = 20,
    cursor: Annotated[
        str | None, page_cursor(max_length=CURSOR_MAX, min_length=CURSOR_MIN, pattern=CURSOR_PATTERN)
    ] = None,
) -> ConversationPage:
    """A page of the user's conversations, newest first; `next_cursor` for the next page (null at the
    end). 400 `invalid_cursor` for a cursor this API did not give."""
    return await service.list(user, limit=limit, cursor=cursor)


@router.get(
    "/{conversation_id}",
    responses={**responses(*AUTHENTICATED_ERRORS, NotFound), 200: _CONVERSATION_ANSWER},
    summary="One conversation",
    operation_id="getConversation",
)
async def get_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, service: Conversations
) -> ConversationRead:
    """One conversation of the user. 404 `conversation_not_found`."""
    return await service.get(user, conversation_id)


@router.patch(
    "/{conversation_id}",
    responses={**responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, NotFound), 200: _CONVERSATION_ANSWER},
    summary="Switch mode or rename (next turn uses it)",
    operation_id="updateConversation",
)
async def update_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, user: CurrentUser, service: Conversations
) -> ConversationRead:
    """Switches the mode or renames the conversation; the next turn uses it. 404 `conversation_not_found`."""
    return await service.update(user, conversation_id, body)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Delete a conversation and its messages",
    operation_id="deleteConversation",
)
async def delete_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, service: Conversations
) -> Response:
    """Deletes the conversation and all its messages. 404 `conversation_not_found`."""
    await service.delete(user, conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{conversation_id}/messages",
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="History by seq (ascending), paginated",
    operation_id="listMessages",
)
async def list_messages(
    conversation_id: uuid.UUID,
    user: CurrentUser,
    service: Conversations,
    limit: PageLimit = 50,
    after: Annotated[int | None, Query(ge=0, le=2**53, description="Messages with seq > after.")] = None,
    before: Annotated[
        int | None,
        Query(
            ge=1,
            le=2**53,
            description="The latest messages with seq < before (with `after`: those between them).",
        ),
    ] = None,
) -> MessagePage:
    """A page of the conversation's messages by `seq`: `after` (messages with a higher seq, oldest
    first), `before` (the latest ones below it) or both (those between them, oldest first: a
    gap between two pages a client holds); `has_more` says whether there are more in that
    direction. 404 `conversation_not_found`."""
    return await service.messages(user, conversation_id, after=after, before=before, limit=limit)


@router.get(
    "/{conversation_id}/messages/{message_id}/variants",
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="The alternative replies to a message (regenerations, answers to earlier edits)",
    operation_id="listReplyVariants",
)
async def list_variants(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, service: Conversations
) -> MessageVariants:
    """`message_id` is the user message or any of its replies. 404 `message_not_found`."""
    return await service.variants(user, conversation_id, message_id)
