"""Avatar use cases. Every mutation invalidates this worker's SessionStore entry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from avatar_chat.avatars import repository
from avatar_chat.avatars.schemas import AvatarCreate, AvatarRead, AvatarUpdate, PersonaUpdateRequest
from avatar_chat.cache.store import SessionStore
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database
from avatar_chat.core.errors import Conflict, NotFound

_NO_AVATAR = "You have no avatar yet; create one with POST /avatars/me."


def _not_found() -> NotFound:
    return NotFound(_NO_AVATAR, code="avatar_not_found")


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
