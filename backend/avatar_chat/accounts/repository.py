"""Account SQL."""

from __future__ import annotations

import uuid

from avatar_chat.core.database import Database


async def delete_auth_user(db: Database, user_id: uuid.UUID) -> None:
    """The embedded default's Auth: delete the auth.users row (as GoTrue's admin delete
    does), which cascades to every table of the user's. Deleting a missing user is a no-op."""
    async with db.connection() as conn:
        await conn.execute("delete from auth.users where id = $1", user_id)
