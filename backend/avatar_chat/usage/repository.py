"""The SQL of GET /me/usage: one round trip (avatar_chat.my_usage)."""

from __future__ import annotations

from typing import Any

from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database


async def my_usage(db: Database, user: Claims) -> dict[str, Any]:
    row = await db.call_as(user, "select avatar_chat.my_usage($1) as usage")
    assert row is not None
    usage: dict[str, Any] = row["usage"]
    return usage
