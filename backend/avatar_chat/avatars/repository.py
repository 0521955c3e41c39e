"""Avatar SQL. Every statement runs inside the caller's RLS-scoped transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from avatar_chat.core.database import Connection, Record
from avatar_chat.core.errors import Conflict, PreconditionFailed

_COLUMNS = "id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at"


async def insert(conn: Connection, *, name: str, personality: str, backstory: str) -> Record:
    try:
        row = await conn.fetchrow(
            f"insert into public.avatars (name, personality, backstory)"
            f" values ($1, $2::public.personality_type, $3) returning {_COLUMNS}",
            name,
            personality,
            backstory,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "avatars_user_id_key":
            raise Conflict("You already have an avatar.", code="avatar_exists") from exc
        raise
    assert row is not None
    return row


async def get_mine(conn: Connection) -> Record | None:
    return await conn.fetchrow(f"select {_COLUMNS} from public.avatars where user_id = (select auth.uid())")


async def delete_mine(conn: Connection) -> bool:
    deleted = await conn.fetchval(
        "delete from public.avatars where user_id = (select auth.uid()) returning id"
    )
    return deleted is not None


async def update_mine(
    conn: Connection, *, claims_json: str, changes: dict[str, Any], if_match: list[int] | None
) -> Record | None:
    """One round trip: the SQL function takes role and claims itself, then updates."""
    try:
        return await conn.fetchrow(
            f"select {_COLUMNS} from avatar_chat.update_my_avatar($1, $2::jsonb, $3)",
            claims_json,
            changes,
            if_match,
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "AC412":
            current = getattr(exc, "detail", None)
            raise PreconditionFailed(
                f"If-Match does not match the avatar's current version ({current}).",
                headers={"ETag": f'"{current}"'} if current else None,
            ) from exc
        raise
