"""Avatar SQL. Statements take the caller's RLS-scoped connection; the update and the
restore are each one `avatar_chat` function call made as the user in one round trip
(`Database.call_as`)."""

from __future__ import annotations

from typing import Any

from avatar_chat.avatars.schemas import AvatarRead, AvatarVersion
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Connection, Database

_COLUMNS = (
    "id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at,"
    " image_path"
)
_HISTORY_COLUMNS = (
    "avatar_id, user_id, version, name, personality::text as personality, backstory, changed_at"
)
# One call as the user each, answering the avatar row as committed (none: no avatar).
_SET_IMAGE = f"select {_COLUMNS}, previous_image_path from avatar_chat.set_my_avatar_image($1, $2, $3)"
# Before an image is decoded: the avatar, If-Match and one upload counted against the rate.
_BEGIN_IMAGE_UPLOAD = f"select {_COLUMNS} from avatar_chat.begin_my_image_upload($1, $2)"
_UPDATE = f"select {_COLUMNS} from avatar_chat.update_my_avatar($1, $2::jsonb, $3)"
_RESTORE = f"select {_COLUMNS} from avatar_chat.restore_my_avatar($1, $2, $3)"
# A character card's write and the check before its image is decoded (10_avatars.sql).
_WRITE_CARD = (
    f"select {_COLUMNS}, previous_image_path from avatar_chat.write_my_avatar_card"
    "($1, $2, $3, $4::public.personality_type, $5, $6::jsonb, $7, $8)"
)
_BEGIN_CARD_IMAGE = "select avatar_chat.begin_my_card_image($1, $2, $3) as has_avatar"
# Newest first; RLS adds `user_id = auth.uid()`, and avatar_history_user_id_version_key
# answers both conditions and the order, so a page reads only its own rows.
_HISTORY_FIRST = (
    f"select {_HISTORY_COLUMNS} from public.avatar_history"
    " where user_id = (select auth.uid()) order by version desc limit $1"
)
_HISTORY_BELOW = (
    f"select {_HISTORY_COLUMNS} from public.avatar_history"
    " where user_id = (select auth.uid()) and version < $2 order by version desc limit $1"
)


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


async def get_card_mine(conn: Connection) -> tuple[AvatarRead, Any] | None:
    """The avatar and what was kept of the card it came from (None: none), or None when
    the user has no avatar."""
    row = await conn.fetchrow(
        f"select {_COLUMNS}, card from public.avatars where user_id = (select auth.uid())"
    )
    return None if row is None else (AvatarRead.from_row(row), row["card"])


async def begin_card_image_mine(
    db: Database, user: Claims, *, replace: bool, if_match: list[int] | None
) -> bool:
    """Whether the user has an avatar; when that is what the import needs (one to replace,
    or none to create), one image upload is counted against their rate. A stale
    `if_match` raises AC412, an upload over the rate AC429 image_rate_limited."""
    row = await db.call_as(user, _BEGIN_CARD_IMAGE, replace, if_match)
    assert row is not None
    return bool(row["has_avatar"])


async def write_card_mine(
    db: Database,
    user: Claims,
    *,
    replace: bool,
    name: str,
    personality: str,
    backstory: str,
    card: dict[str, Any],
    image_path: str | None,
    if_match: list[int] | None,
) -> tuple[AvatarRead, str | None] | None:
    """The avatar as committed and the image folder it no longer points at; None when
    there is nothing to write to (`replace`: no avatar; else: the user already has one).
    A stale `if_match` raises AC412."""
    row = await db.call_as(
        user, _WRITE_CARD, replace, name, personality, backstory, card, image_path, if_match
    )
    return None if row is None else (AvatarRead.from_row(row), row["previous_image_path"])


async def delete_mine(conn: Connection) -> tuple[bool, str | None]:
    """Whether there was an avatar to delete, and the image folder it pointed at."""
    row = await conn.fetchrow(
        "delete from public.avatars where user_id = (select auth.uid()) returning id, image_path"
    )
    return (False, None) if row is None else (True, row["image_path"])


async def set_image_mine(
    db: Database, user: Claims, *, image_path: str | None, if_match: list[int] | None
) -> tuple[AvatarRead, str | None] | None:
    """The row as committed and the image folder it pointed at before, or None when the
    user has no avatar; a stale `if_match` raises AC412 (412 with the current ETag)."""
    row = await db.call_as(user, _SET_IMAGE, image_path, if_match)
    if row is None:
        return None
    return AvatarRead.from_row(row), row["previous_image_path"]


async def begin_image_upload_mine(
    db: Database, user: Claims, *, if_match: list[int] | None
) -> AvatarRead | None:
    """The avatar an image upload will change, or None when the user has no avatar; one
    upload is counted against the user's rate. A stale `if_match` raises AC412, an upload
    over the rate AC429 image_rate_limited (nothing counted for either)."""
    row = await db.call_as(user, _BEGIN_IMAGE_UPLOAD, if_match)
    return None if row is None else AvatarRead.from_row(row)


async def update_mine(
    db: Database, user: Claims, *, changes: dict[str, Any], if_match: list[int] | None
) -> AvatarRead | None:
    """The row as committed, or None when the user has no avatar; a stale `if_match`
    raises AC412 (412 with the current ETag)."""
    row = await db.call_as(user, _UPDATE, changes, if_match)
    return None if row is None else AvatarRead.from_row(row)


async def list_history(conn: Connection, *, limit: int, below: int | None) -> list[AvatarVersion]:
    """The caller's avatar versions, newest first: the first page, or those below `below`."""
    if below is None:
        rows = await conn.fetch(_HISTORY_FIRST, limit)
    else:
        rows = await conn.fetch(_HISTORY_BELOW, limit, below)
    return [AvatarVersion.from_row(r) for r in rows]


async def restore_mine(
    db: Database, user: Claims, *, version: int, if_match: list[int] | None
) -> AvatarRead | None:
    """The new version, with the persona of `version`, as committed; None when the user
    has no avatar. A stale `if_match` raises AC412 (412 with the current ETag), a
    version not in the user's history AC404 (`avatar_version_not_found`)."""
    row = await db.call_as(user, _RESTORE, version, if_match)
    return None if row is None else AvatarRead.from_row(row)
