"""Avatar SQL. Statements take the caller's RLS-scoped connection; the update is one
`avatar_chat` function call made as the user in one round trip (`Database.call_as`)."""

from __future__ import annotations

from typing import Any

from avatar_chat.avatars.schemas import AvatarRead
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Connection, Database

_COLUMNS = "id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at"


async def insert(conn: Connection, *, name: str, personality: str, backstory: str) -> AvatarRead | None:
    """The new avatar, or None when the user already has one."""
    row = await conn.fetchrow(
        f"insert into public.avatars (name, personality, backstory)"
        f" values ($1, $2::public.personality_type, $3)"
        f" on conflict (user_id) do nothing returning {_COLUMNS}",
        name,
        personality,
        backstory,
    )
    return None if row is None else AvatarRead.from_row(row)


async def get_mine(conn: Connection) -> AvatarRead | None:
    row = await conn.fetchrow(f"select {_COLUMNS} from public.avatars where user_id = (select auth.uid())")
    return None if row is None else AvatarRead.from_row(row)


async def delete_mine(conn: Connection) -> bool:
    deleted = await conn.fetchval(
        "delete from public.avatars where user_id = (select auth.uid()) returning id"
    )
    return deleted is not None


async def update_mine(
    db: Database, user: Claims, *, changes: dict[str, Any], if_match: list[int] | None
) -> AvatarRead | None:
    """The row as committed, or None when the user has no avatar; a stale `if_match`
    raises AC412 (412 with the current ETag)."""
    row = await db.call_as(
        user,
        f"select {_COLUMNS} from avatar_chat.update_my_avatar($1, $2::jsonb, $3)",
        changes,
        if_match,
    )
    return None if row is None else AvatarRead.from_row(row)
