"""Avatar use cases. Every mutation invalidates this worker's SessionStore entry."""

from __future__ import annotations

from avatar_chat.auth.claims import Claims
from avatar_chat.avatars import repository
from avatar_chat.avatars.schemas import AvatarCreate, AvatarRead, AvatarUpdate, PersonaUpdateRequest
from avatar_chat.core.database import Database, Record
from avatar_chat.core.errors import NotFound
from avatar_chat.sessions.store import SessionStore

_NO_AVATAR = "You have no avatar yet; create one with POST /avatars/me."


def _read(row: Record) -> AvatarRead:
    return AvatarRead.model_validate(dict(row.items()))


class AvatarService:
    def __init__(self, db: Database, store: SessionStore) -> None:
        self._db = db
        self._store = store

    async def create(self, user: Claims, data: AvatarCreate) -> AvatarRead:
        async with self._db.as_user(user.as_json()) as conn:
            row = await repository.insert(
                conn, name=data.name, personality=data.personality.value, backstory=data.backstory
            )
        await self._store.clear_avatar_cache(user.sub)
        return _read(row)

    async def get(self, user: Claims) -> AvatarRead:
        async with self._db.as_user(user.as_json()) as conn:
            row = await repository.get_mine(conn)
        if row is None:
            raise NotFound(_NO_AVATAR, code="avatar_not_found")
        return _read(row)

    async def update(
        self, user: Claims, data: AvatarUpdate | PersonaUpdateRequest, *, if_match: list[int] | None
    ) -> AvatarRead:
        """One round trip; the answer is the row as committed."""
        try:
            async with self._db.connection() as conn:
                row = await repository.update_mine(
                    conn, claims_json=user.as_json(), changes=data.changes(), if_match=if_match
                )
        finally:
            # Also on failure: whether or not it committed, the cache must not outlive it.
            await self._store.clear_avatar_cache(user.sub)
        if row is None:
            raise NotFound(_NO_AVATAR, code="avatar_not_found")
        return _read(row)

    async def delete(self, user: Claims) -> None:
        async with self._db.as_user(user.as_json()) as conn:
            deleted = await repository.delete_mine(conn)
        await self._store.clear_avatar_cache(user.sub)
        if not deleted:
            raise NotFound(_NO_AVATAR, code="avatar_not_found")
