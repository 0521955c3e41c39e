"""Avatar use cases. Every mutation invalidates this worker's SessionStore entry."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Request

from avatar_chat.avatars import repository
from avatar_chat.avatars.schemas import (
    VERSION_MAX,
    AvatarCreate,
    AvatarHistoryPage,
    AvatarRead,
    AvatarUpdate,
    PersonaUpdateRequest,
)
from avatar_chat.cache.store import SessionStore
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database
from avatar_chat.core.errors import BadRequest, Conflict, NotFound

_NO_AVATAR = "You have no avatar yet; create one with POST /avatars/me."


def _not_found() -> NotFound:
    return NotFound(_NO_AVATAR, code="avatar_not_found")


_CURSOR = re.compile(r"[0-9]{1,16}")


def decode_history_cursor(cursor: str) -> int:
    """A history page's `next_cursor`: the version the next page continues below."""
    if _CURSOR.fullmatch(cursor) and 1 <= (version := int(cursor)) <= VERSION_MAX:
        return version
    raise BadRequest("The cursor is not one this API issued.", code="invalid_cursor")


class AvatarService:
    def __init__(self, db: Database, store: SessionStore[Any, Any]) -> None:
        self._db = db
        self._store = store

    async def create(self, user: Claims, data: AvatarCreate) -> AvatarRead:
        async with self._db.as_user(user) as conn:
            avatar = await repository.insert(
                conn, name=data.name, personality=data.personality.value, backstory=data.backstory
            )
        await self._store.clear_avatar_cache(user.sub)
        if avatar is None:
            raise Conflict("You already have an avatar.", code="avatar_exists")
        return avatar

    async def get(self, user: Claims) -> AvatarRead:
        async with self._db.as_user(user) as conn:
            avatar = await repository.get_mine(conn)
        if avatar is None:
            raise _not_found()
        return avatar

    async def update(
        self, user: Claims, data: AvatarUpdate | PersonaUpdateRequest, *, if_match: list[int] | None
    ) -> AvatarRead:
        """One round trip; the answer is the row as committed."""
        try:
            avatar = await repository.update_mine(self._db, user, changes=data.changes(), if_match=if_match)
        finally:
            # Also on failure: whether or not it committed, the cache must not outlive it.
            await self._store.clear_avatar_cache(user.sub)
        if avatar is None:
            raise _not_found()
        return avatar

    async def history(self, user: Claims, *, limit: int, cursor: str | None) -> AvatarHistoryPage:
        """Every version of the user's avatar, newest first; empty without an avatar."""
        below = None if cursor is None else decode_history_cursor(cursor)
        async with self._db.as_user(user) as conn:
            rows = await repository.list_history(conn, limit=limit + 1, below=below)
        items = rows[:limit]
        next_cursor = str(items[-1].version) if len(rows) > limit else None
        return AvatarHistoryPage(items=items, next_cursor=next_cursor)

    async def restore(self, user: Claims, version: int, *, if_match: list[int] | None) -> AvatarRead:
        """A new version with the persona of `version`; one round trip, as `update`."""
        try:
            avatar = await repository.restore_mine(self._db, user, version=version, if_match=if_match)
        finally:
            # Also on failure: whether or not it committed, the cache must not outlive it.
            await self._store.clear_avatar_cache(user.sub)
        if avatar is None:
            raise _not_found()
        return avatar

    async def delete(self, user: Claims) -> None:
        async with self._db.as_user(user) as conn:
            deleted = await repository.delete_mine(conn)
        await self._store.clear_avatar_cache(user.sub)
        if not deleted:
            raise _not_found()


def avatars_of(request: Request) -> AvatarService:
    """This worker's AvatarService; hot routes take it straight from the request."""
    service: AvatarService = request.state.avatars
    return service


async def get_avatar_service(request: Request) -> AvatarService:
    return avatars_of(request)


Avatars = Annotated[AvatarService, Depends(get_avatar_service)]
