"""Conversation and message routes: HTTP (and SSE) in and out, nothing else."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.chat.conversations import ConversationService
from avatar_chat.chat.schemas import (
    IDEMPOTENCY_KEY_MAX,
    PAGE_MAX,
    ConversationCreate,
    ConversationPage,
    ConversationRead,
    ConversationUpdate,
    Exchange,
    MessageCreate,
    MessagePage,
)
from avatar_chat.chat.turns import ChatService, Turn
from avatar_chat.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ProviderError,
    ProviderTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
    error_payload,
    responses,
)
from avatar_chat.core.state import State

router = APIRouter(prefix="/conversations", tags=["conversations"])

_COMMON = (Unauthorized, Forbidden, ValidationFailed, ServiceUnavailable)
# Routes that read a JSON body: it may not parse (e.g. not UTF-8), or be over MAX_BODY_BYTES.
_BODY = (BadRequest, PayloadTooLarge)
PageLimit = Annotated[int, Query(ge=1, le=PAGE_MAX, description=f"Page size, 1-{PAGE_MAX}.")]


async def get_conversations(state: State) -> ConversationService:
    return ConversationService(state.db, state.store)


async def get_chat(state: State) -> ChatService:
    return state.chat


Conversations = Annotated[ConversationService, Depends(get_conversations)]
Chat = Annotated[ChatService, Depends(get_chat)]


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


_SSE_DOC = (
    "With `Accept: text/event-stream` the answer is an SSE stream instead: `user_message` (the saved "
    'message), `delta` ({"content": ...} chunks), then `done` (the saved reply) or `error` '
    '({"code", "message", "details": {"assistant_message_id", ...}}).'
)


def _sse_event(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": payload},
        },
    }


# OpenAPI 3.1 reads an event stream's `schema` as the schema of each event.
_SSE_EVENT = {
    "oneOf": [
        _sse_event("user_message", {"$ref": "#/components/schemas/MessageRead"}),
        _sse_event(
            "delta",
            {"type": "object", "required": ["content"], "properties": {"content": {"type": "string"}}},
        ),
        _sse_event("done", {"$ref": "#/components/schemas/MessageRead"}),
        _sse_event("error", {"$ref": "#/components/schemas/ErrorBody"}),
    ]
}


@router.post(
    "/{conversation_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=Exchange,
    responses={
        **responses(*_COMMON, *_BODY, NotFound, Conflict, TooManyRequests, ProviderError, ProviderTimeout),
        201: {
            "description": "The saved user message and reply.",
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        },
    },
    summary="Send a message; the reply comes back as JSON or streamed (SSE)",
    description=_SSE_DOC,
)
async def send_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    user: CurrentUser,
    chat: Chat,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX,
            description="Retries with the same key return the original exchange instead of a second one.",
        ),
    ] = None,
) -> Any:
    turn = await chat.send(user, conversation_id, body.content, idempotency_key=idempotency_key)
    headers = {"Idempotent-Replayed": "true"} if turn.replayed else {}
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(
            _sse(turn),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            status_code=status.HTTP_201_CREATED,
        )
    exchange: Exchange = await turn.exchange()
    return JSONResponse(
        exchange.model_dump(mode="json"), status_code=status.HTTP_201_CREATED, headers=headers
    )


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _sse(turn: Turn) -> AsyncIterator[str]:
    yield _event("user_message", turn.user_message.model_dump(mode="json"))
    async for chunk in turn.stream():
        yield _event("delta", {"content": chunk})
    try:
        reply = (await turn.result()).raise_for_failure(turn.user_message)
    except AppError as exc:
        yield _event("error", error_payload(exc.code, exc.message, exc.details)["error"])
        return
    yield _event("done", reply.model_dump(mode="json"))
