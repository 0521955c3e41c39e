"""Sending a message: HTTP (JSON or SSE) in and out, nothing else."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, StreamingResponse

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.chat.schemas import IDEMPOTENCY_KEY_MAX, Exchange, MessageCreate
from avatar_chat.chat.service import chat_of
from avatar_chat.chat.turn import Turn
from avatar_chat.core.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    AppError,
    Conflict,
    NotFound,
    ProviderError,
    ProviderTimeout,
    TooManyRequests,
    error_payload,
    responses,
)
from avatar_chat.core.http import header_parameter, read_header

router = APIRouter(prefix="/conversations", tags=["chat"])


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
        **responses(
            *AUTHENTICATED_ERRORS,
            *BODY_ERRORS,
            NotFound,
            Conflict,
            TooManyRequests,
            ProviderError,
            ProviderTimeout,
        ),
        201: {
            "description": "The saved user message and reply.",
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        },
    },
    summary="Send a message; the reply comes back as JSON or streamed (SSE)",
    description=_SSE_DOC,
    openapi_extra={
        "parameters": [
            header_parameter(
                "Idempotency-Key",
                description="Retries with the same key return the original exchange instead of a second one.",
                min_length=1,
                max_length=IDEMPOTENCY_KEY_MAX,
            )
        ]
    },
)
async def send_message(
    conversation_id: uuid.UUID, body: MessageCreate, user: CurrentUser, request: Request
) -> Any:
    # The service and the header come from the request rather than as FastAPI parameters:
    # a chat turn is the hottest route, and each costs it about 10-15 us per request.
    key = read_header(request, "Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)
    sse = "text/event-stream" in request.headers.get("accept", "")
    turn = await chat_of(request).send(user, conversation_id, body.content, idempotency_key=key, stream=sse)
    headers = {"Idempotent-Replayed": "true"} if turn.replayed else {}
    if sse:
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
