"""The server-sent events of a reply: their names, ids, encoding and OpenAPI schemas.

A send (or regenerate, or edit) streams `user_message`, `notice`... (safety notices saved
with it, docs/safety.md), `assistant_message`, `delta`..., then `done`, `filtered` or
`error`; following a reply (GET .../stream) streams `reset`, `delta`..., then `done`,
`filtered` or `error`. `filtered`: moderation stopped the reply; its data is the reply as
saved (status filtered, the operator's replacement text), which replaces what was shown.
A send answered by a crisis notice alone (SAFETY_CRISIS_MODE=replace) has no
`assistant_message`: its `done` carries the notice. Every `delta`, `done` and `reset` carries the SSE id
`<attempt>:<characters so far>`, which a client sends back as `Last-Event-ID` to resume.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps does with a str
from typing import Any, Final

from avatar_chat.chat.turn import Turn
from avatar_chat.conversations.schemas import MessageStatus
from avatar_chat.core.errors import AppError, BadRequest, error_payload

MEDIA_TYPE: Final = "text/event-stream"
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
LAST_EVENT_ID_MAX: Final = 40  # the longest Last-Event-ID header read
# What parse_event_id takes, exactly (as the OpenAPI `pattern` of Last-Event-ID): an event id
# `<attempt>:<characters so far>`, or nothing (start over).
EVENT_ID_PATTERN: Final = "^([0-9]+:[0-9]+)?$"
_EVENT_ID = re.compile(r"([0-9]+):([0-9]+)")

_NOT_COMPLETED = "The reply did not complete; send again with the same Idempotency-Key to retry it."


@dataclass(frozen=True, slots=True)
class ReplyEvent:
    """One event of a reply being followed: `reset`, `delta`, `done` or `error`, with its id."""

    name: str
    data: dict[str, Any]
    id: str | None


def event_id(attempt: int, offset: int) -> str:
    """The id of an event: the reply's attempt and how many characters were sent so far."""
    return f"{attempt}:{offset}"


def parse_event_id(last_event_id: str | None) -> tuple[int | None, int]:
    """(attempt, offset) of a Last-Event-ID this API sent; anything else starts over."""
    if not last_event_id:
        return None, 0
    # ASCII digits only (str.isdigit takes "²", which int() refuses); the length is bounded
    # by the router.
    match = _EVENT_ID.fullmatch(last_event_id)
    if match is None:
        raise BadRequest("Last-Event-ID is not an event id of this reply.", code="invalid_event_id")
    return int(match[1]), int(match[2])


def not_completed(message_id: uuid.UUID, status: str, code: str) -> ReplyEvent:
    """The `error` event of a followed reply that settled without completing."""
    details = {"assistant_message_id": str(message_id), "status": status}
    return ReplyEvent("error", {"code": code, "message": _NOT_COMPLETED, "details": details}, None)


# json.dumps(data, separators=...) would build a new encoder for every event.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def encode(name: str, data: Any, id_: str | None = None) -> str:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {name}\ndata: {_compact_json(data)}\n\n"


def encode_delta(content: str, attempt: int, offset: int) -> str:
    """`encode("delta", {"content": content}, event_id(attempt, offset))`, written out: the
    one event sent per chunk."""
    return f'id: {attempt}:{offset}\nevent: delta\ndata: {{"content":{_json_string(content)}}}\n\n'


async def turn_events(turn: Turn) -> AsyncIterator[str]:
    """The stream answering a send: the saved messages, the text as it comes, the end."""
    yield encode("user_message", turn.user_message.model_dump(mode="json"))
    for notice in turn.notices:
        yield encode("notice", notice.model_dump(mode="json"))
    if turn.reply is None and turn.replayed is None:  # a crisis notice in place of a reply
        yield encode("done", turn.notices[-1].model_dump(mode="json"))
        return
    if turn.reply is not None:
        yield encode("assistant_message", turn.reply.model_dump(mode="json"))
    offset = 0
    attempt = turn.attempt
    async for chunk in turn.stream():
        offset += len(chunk)
        yield encode_delta(chunk, attempt, offset)
    try:
        reply = (await turn.result()).raise_for_failure(turn.user_message)
    except AppError as exc:
        yield encode("error", error_payload(exc.code, exc.message, exc.details)["error"])
        return
    if reply.status == MessageStatus.filtered:
        yield encode("filtered", reply.model_dump(mode="json"))
        return
    yield encode("done", reply.model_dump(mode="json"), event_id(turn.attempt, len(reply.content)))


async def follow_events(events: AsyncIterator[ReplyEvent]) -> AsyncIterator[str]:
    """A followed reply's events; a failure once the stream has begun (the database away
    for longer than the follower waits) ends it with an `error` event, not a cut stream:
    the client resumes with its last event id."""
    try:
        async for event in events:
            yield encode(event.name, event.data, event.id)
    except AppError as exc:
        yield encode("error", error_payload(exc.code, exc.message, exc.details)["error"])


# --- the OpenAPI description of both streams -------------------------------------------

DOC: Final = (
    "With `Accept: text/event-stream` the answer is an SSE stream instead: `user_message` (the saved "
    "message), `notice` (a safety notice saved with it: AI disclosure, break reminder, crisis services; "
    "zero or more), `assistant_message` (the reply being generated: its id and seq, to resume or stop it), "
    '`delta` ({"content": ...} chunks), then `done` (the saved reply), `filtered` (moderation stopped the '
    "reply: the saved reply with its replacement text, to show instead of what came) or `error` "
    '({"code", "message", "details": {"assistant_message_id", ...}}). A crisis notice given in place of '
    "a reply ends the stream with `done` carrying the notice. Every `delta` and `done` has an "
    "SSE `id` (`<attempt>:<characters so far>`): send the last one as `Last-Event-ID` to "
    "`GET .../messages/{message_id}/stream` to resume on any worker."
)


def _schema(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "id": {"type": "string"},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": payload},
        },
    }


_DELTA = {"type": "object", "required": ["content"], "properties": {"content": {"type": "string"}}}
_MESSAGE = {"$ref": "#/components/schemas/MessageRead"}
_ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_RESET = {"type": "object", "required": ["attempt"], "properties": {"attempt": {"type": "integer"}}}
# OpenAPI 3.1 reads an event stream's `schema` as the schema of each event.
TURN_SCHEMA: Final = {
    "oneOf": [
        _schema("user_message", _MESSAGE),
        _schema("notice", _MESSAGE),
        _schema("assistant_message", _MESSAGE),
        _schema("delta", _DELTA),
        _schema("done", _MESSAGE),
        _schema("filtered", _MESSAGE),
        _schema("error", _ERROR),
    ]
}
FOLLOW_SCHEMA: Final = {
    "oneOf": [
        _schema("reset", _RESET),
        _schema("delta", _DELTA),
        _schema("done", _MESSAGE),
        _schema("filtered", _MESSAGE),
        _schema("error", _ERROR),
    ]
}
