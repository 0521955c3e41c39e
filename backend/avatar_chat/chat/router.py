"""Sending, regenerating, editing, stopping, resuming and deleting messages: HTTP (JSON
or SSE) in and out, nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.chat import events
from avatar_chat.chat.dependencies import Chat, chat_service
from avatar_chat.chat.schemas import IDEMPOTENCY_KEY_MAX, Exchange, MessageCreate
from avatar_chat.chat.service import ChatService
from avatar_chat.chat.streams import closing
from avatar_chat.chat.turn import Turn
from avatar_chat.conversations.schemas import MessageRead
from avatar_chat.core.claims import Claims
from avatar_chat.core.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    BadRequest,
    Conflict,
    NotFound,
    ProviderError,
    ProviderTimeout,
    ServiceUnavailable,
    TooManyRequests,
    responses,
)
from avatar_chat.core.http import header_parameter, read_header
from avatar_chat.core.openapi import answer, body

router = APIRouter(prefix="/conversations", tags=["chat"])


_IDEMPOTENCY_DOC = "Retries with the same key return the original exchange instead of a second one."


_TURN_ERRORS = (
    *AUTHENTICATED_ERRORS,
    *BODY_ERRORS,
    NotFound,
    Conflict,
    TooManyRequests,
    ProviderError,
    ProviderTimeout,
    ServiceUnavailable,  # moderation_unavailable (MODERATION_FAIL_MODE=closed), database_unavailable
)


# What an exchange feeds: the conversation's history; its reply streamed, stopped, its
# alternatives, another one, chosen, deleted; the user's message edited.
_IN_CONVERSATION = {"path.conversation_id": "$request.path.conversation_id"}
_REPLY = {**_IN_CONVERSATION, "path.message_id": body("/assistant_message/id")}
_EXCHANGE_LINKS: dict[str, dict[str, str]] = {
    "listMessages": _IN_CONVERSATION,
    "streamReply": _REPLY,
    "stopReply": _REPLY,
    "listReplyVariants": _REPLY,
    "regenerateReply": _REPLY,
    "chooseReply": _REPLY,
    "deleteMessage": _REPLY,
    "editMessage": {**_IN_CONVERSATION, "path.message_id": body("/user_message/id")},
}


_TURN_CODES = (
    "Codes these answer: 404 `conversation_not_found`, `message_not_found`; 409 `avatar_required`, "
    "`not_latest`, `reply_in_progress`, `send_in_progress`, `reply_superseded`; 422 `message_blocked`, "
    "`idempotency_key_reused`, `not_editable`; 429 `rate_limited`, `too_many_streams`, `quota_exceeded`; "
    "503 `moderation_unavailable`, `reply_interrupted`."
)


def _turn_route(summary: str, description: str) -> dict[str, Any]:
    """What every route that starts a reply declares: JSON or SSE, its errors, the key."""
    return {
        "status_code": status.HTTP_201_CREATED,
        "response_model": Exchange,
        "responses": {
            **responses(*_TURN_ERRORS),
            201: {
                "content": {events.MEDIA_TYPE: {"schema": events.TURN_SCHEMA}},
                **answer("The saved user message and reply.", **_EXCHANGE_LINKS),
            },
        },
        "summary": summary,
        "description": description + " " + _TURN_CODES + "\n\n" + events.DOC,
        "openapi_extra": {
            "parameters": [
                header_parameter(
                    "Idempotency-Key",
                    description=_IDEMPOTENCY_DOC,
                    min_length=1,
                    max_length=IDEMPOTENCY_KEY_MAX,
                )
            ]
        },
    }


def _wants_sse(request: Request) -> bool:
    return events.MEDIA_TYPE in request.headers.get("accept", "")


def _key(request: Request) -> str | None:
    return read_header(request, "Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)


async def _start(
    chat: ChatService, user: Claims, sse: bool, begin: Callable[[], Awaitable[Turn]]
) -> Response:
    """Start a turn and answer it; a streamed one holds one of the user's open streams
    (MAX_OPEN_STREAMS_PER_USER), checked before the turn begins, until its stream ends."""
    if not sse:
        return await _answer(await begin(), None)
    close = chat.streams.open(user.sub)
    try:
        turn = await begin()
    except BaseException:
        close()
        raise
    return await _answer(turn, close)


async def _answer(turn: Turn, close: Callable[[], None] | None) -> Response:
    headers = {"Idempotent-Replayed": "true"} if turn.replayed else {}
    if close is not None:
        return StreamingResponse(
            closing(events.turn_events(turn), close),
            media_type=events.MEDIA_TYPE,
            headers={**headers, **events.HEADERS},
            status_code=status.HTTP_201_CREATED,
        )
    exchange: Exchange = await turn.exchange()
    return JSONResponse(
        exchange.model_dump(mode="json"), status_code=status.HTTP_201_CREATED, headers=headers
    )


@router.post(
    "/{conversation_id}/messages",
    **_turn_route("Send a message; the reply comes back as JSON or streamed (SSE)", "Sends a message."),
    operation_id="sendMessage",
)
async def send_message(
    conversation_id: uuid.UUID, body: MessageCreate, user: CurrentUser, request: Request
) -> Response:
    # The service and the header come from the request rather than as FastAPI parameters:
    # a chat turn is the hottest route, and each costs it about 10-15 us per request.
    sse = _wants_sse(request)
    chat = chat_service.of(request)
    key = _key(request)
    return await _start(
        chat,
        user,
        sse,
        lambda: chat.send(
            user,
            conversation_id,
            body.content,
            idempotency_key=key,
            stream=sse,
            # Picks the crisis notice's language (SAFETY_CRISIS_NOTICES); only its first tags are read.
            accept_language=request.headers.get("accept-language"),
        ),
    )


@router.post(
    "/{conversation_id}/messages/{message_id}/regenerate",
    **_turn_route(
        "Another reply to the latest message",
        "Generates an alternative to the latest reply `message_id`, with the current persona. "
        "The alternatives are kept (`variant` 0, 1, 2...; see .../variants); the new one becomes "
        "the current one, which history shows and the model is given.",
    ),
    operation_id="regenerateReply",
)
async def regenerate_reply(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, chat: Chat, request: Request
) -> Response:
    sse = _wants_sse(request)
    key = _key(request)
    return await _start(
        chat,
        user,
        sse,
        lambda: chat.regenerate(user, conversation_id, message_id, idempotency_key=key, stream=sse),
    )


@router.patch(
    "/{conversation_id}/messages/{message_id}",
    **_turn_route(
        "Edit the latest message; it is answered again",
        "Replaces the text of your latest message `message_id` and generates a new reply to it "
        "(its earlier replies are kept as other alternatives). Only the latest exchange can be "
        "edited: 409 `not_latest` otherwise.",
    ),
    operation_id="editMessage",
)
async def edit_message(
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    body: MessageCreate,
    user: CurrentUser,
    chat: Chat,
    request: Request,
) -> Response:
    sse = _wants_sse(request)
    key = _key(request)
    return await _start(
        chat,
        user,
        sse,
        lambda: chat.regenerate(
            user,
            conversation_id,
            message_id,
            new_content=body.content,
            idempotency_key=key,
            stream=sse,
            accept_language=request.headers.get("accept-language"),
        ),
    )


@router.put(
    "/{conversation_id}/messages/{message_id}/current",
    response_model=MessageRead,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound, Conflict),
    summary="Choose which alternative reply is current",
    description="The reply `message_id` becomes the current alternative of its exchange: history "
    "shows it, and the model reads it in the turns that follow (its other alternatives stay, listed "
    "by GET .../variants). Choosing the current one changes nothing. 404 `message_not_found` when "
    "it is not a reply of this conversation; 409 `reply_in_progress` while a reply to the same "
    "message is still being generated.",
    operation_id="chooseReply",
)
async def choose_reply(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, chat: Chat
) -> MessageRead:
    return await chat.choose_reply(user, conversation_id, message_id)


@router.delete(
    "/{conversation_id}/messages/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTHENTICATED_ERRORS, NotFound, Conflict),
    summary="Delete a message (a message of yours takes its replies with it)",
    description="Seq numbers are never reused; the next reply's context no longer holds the deleted text. "
    "409 `reply_in_progress` while a reply being deleted is still generated (stop it first). "
    "404 `conversation_not_found`, `message_not_found`.",
    operation_id="deleteMessage",
)
async def delete_message(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, chat: Chat
) -> Response:
    await chat.delete_message(user, conversation_id, message_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{conversation_id}/messages/{message_id}/stop",
    responses=responses(*AUTHENTICATED_ERRORS, NotFound),
    summary="Stop generating a reply",
    description="The worker generating the reply (whichever receives this) stops at its next chunk and "
    "saves the text so far as `stopped`; the answer is the reply after that (or still `streaming` if "
    "that took longer than CHAT_STOP_WAIT_S). Stopping a reply that is already settled changes nothing. "
    "404 `conversation_not_found`, `message_not_found`.",
    operation_id="stopReply",
)
async def stop_reply(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, chat: Chat
) -> MessageRead:
    return await chat.stop(user, conversation_id, message_id)


@router.get(
    "/{conversation_id}/messages/{message_id}/stream",
    responses={
        **responses(*AUTHENTICATED_ERRORS, NotFound, BadRequest, TooManyRequests),
        200: {
            "description": "The reply's events.",
            "content": {events.MEDIA_TYPE: {"schema": events.FOLLOW_SCHEMA}},
        },
    },
    response_class=StreamingResponse,
    summary="Stream a reply, also one being generated elsewhere (resume)",
    description="What is saved so far at once, then the rest as it is generated (on any worker), then "
    "`done` or `error`; a finished reply streams whole and ends. With `Last-Event-ID` (the `id` of the "
    "last event received) only what came after it is sent; `reset` means the reply started over (a retry) "
    "and the text received so far is to be dropped. Codes: 400 `invalid_event_id`; 404 "
    "`conversation_not_found`, `message_not_found`; 429 `too_many_streams`.",
    openapi_extra={
        "parameters": [
            header_parameter(
                "Last-Event-ID",
                description="The id of the last event received (`<attempt>:<characters so far>`).",
                max_length=events.LAST_EVENT_ID_MAX,
                pattern=events.EVENT_ID_PATTERN,
            )
        ]
    },
    operation_id="streamReply",
)
async def stream_reply(
    conversation_id: uuid.UUID, message_id: uuid.UUID, user: CurrentUser, chat: Chat, request: Request
) -> StreamingResponse:
    last_event_id = read_header(request, "Last-Event-ID", max_length=events.LAST_EVENT_ID_MAX)
    close = chat.streams.open(user.sub)
    try:
        followed = await chat.follow(user, conversation_id, message_id, last_event_id=last_event_id)
    except BaseException:
        close()
        raise
    return StreamingResponse(
        closing(events.follow_events(followed), close), media_type=events.MEDIA_TYPE, headers=events.HEADERS
    )
