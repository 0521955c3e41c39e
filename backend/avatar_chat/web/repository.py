"""SQL of the dev sign-in: users of the embedded database's local `auth.users`."""

from __future__ import annotations

import uuid

from avatar_chat.core.database import Connection


async def find_or_create_user(conn: Connection, email: str) -> uuid.UUID:
    """The local user with this email (compared in lower case), created if there is none.

    One transaction, serialised per email by a transaction-level advisory lock, so two
    sign-ins at once make one user (auth.users has no unique email in the local stand-in)."""
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", "dev-sign-in:" + email)
        user_id: uuid.UUID | None = await conn.fetchval(
            "select id from auth.users where lower(email) = $1 order by created_at, id limit 1", email
        )
        if user_id is None:
            user_id = await conn.fetchval(
                "insert into auth.users (id, email) values (gen_random_uuid(), $1) returning id", email
            )
    assert user_id is not None
    return user_id
