"""Conversation use cases: create, list, read, switch mode or rename, delete, history."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from avatar_chat.cache.store import SessionStore
from avatar_chat.conversations import repository, schemas
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database
from avatar_chat.core.errors import BadRequest, NotFound


def _not_found() -> NotFound:
    return NotFound("No such conversation.", code="conversation_not_found")


# A page's cursor: the last conversation's creation time (microseconds since the epoch) and
# id, `<micros>_<uuid>`. The OpenAPI `pattern` of `cursor` is exactly what decode_cursor takes
# (17 digits reach beyond the year 5000).
CURSOR_PATTERN = "^[0-9]{1,17}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CURSOR_MIN, CURSOR_MAX = 1 + 1 + 36, 17 + 1 + 36
_CURSOR = re.compile(CURSOR_PATTERN.strip("^$"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(created_at: datetime, conversation_id: uuid.UUID) -> str:
    return f"{(created_at - _EPOCH) // _MICROSECOND}_{conversation_id}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    if not _CURSOR.fullmatch(cursor):
        raise BadRequest("The cursor is not one this API issued.", code="invalid_cursor")
    micros, _, ident = cursor.partition("_")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(ident)


class ConversationService:
    def __init__(self, db: Database, store: SessionStore[Any, Any]) -> None:
        self._db = db
        self._store = store

    async def create(self, user: Claims, data: schemas.ConversationCreate) -> schemas.ConversationRead:
        async with self._db.as_user(user) as conn:
            return await repository.create_conversation(conn, mode=data.mode.value, title=data.title)

    async def list(self, user: Claims, *, limit: int, cursor: str | None) -> schemas.ConversationPage:
        before = None if cursor is None else decode_cursor(cursor)
        async with self._db.as_user(user) as conn:
            rows = await repository.list_conversations(conn, limit=limit + 1, before=before)
        items = rows[:limit]
        next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        return schemas.ConversationPage(items=items, next_cursor=next_cursor)

    async def get(self, user: Claims, conversation_id: uuid.UUID) -> schemas.ConversationRead:
        async with self._db.as_user(user) as conn:
            conversation = await repository.get_conversation(conn, conversation_id)
        if conversation is None:
            raise _not_found()
        return conversation

    async def update(
        self, user: Claims, conversation_id: uuid.UUID, data: schemas.ConversationUpdate
    ) -> schemas.ConversationRead:
        try:
            async with self._db.as_user(user) as conn:
                conversation = await repository.update_conversation(conn, conversation_id, data.changes())
        finally:
            await self._store.invalidate_conversation(conversation_id)
        if conversation is None:
            raise _not_found()
        return conversation

    async def delete(self, user: Claims, conversation_id: uuid.UUID) -> None:
        try:
            async with self._db.as_user(user) as conn:
                deleted = await repository.delete_conversation(conn, conversation_id)
        finally:
            await self._store.invalidate_conversation(conversation_id)
        if not deleted:
            raise _not_found()

    async def messages(
        self, user: Claims, conversation_id: uuid.UUID, *, after: int | None, before: int | None, limit: int
    ) -> schemas.MessagePage:
        async with self._db.as_user(user) as conn:
            rows = await repository.list_messages(
                conn, conversation_id, after=after, before=before, limit=limit + 1
            )
            if not rows and not await repository.conversation_exists(conn, conversation_id):
                raise _not_found()
        has_more = len(rows) > limit
        if has_more:
            rows = rows[1:] if before is not None and after is None else rows[:limit]
        return schemas.MessagePage(items=rows, has_more=has_more)

    async def variants(
        self, user: Claims, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> schemas.MessageVariants:
        async with self._db.as_user(user) as conn:
            items = await repository.list_variants(conn, conversation_id, message_id)
            if not items and await repository.get_message(conn, conversation_id, message_id) is None:
                raise NotFound("No such message in this conversation.", code="message_not_found")
        current = next((m.id for m in items if m.is_current), None)
        return schemas.MessageVariants(items=items, current_id=current)
