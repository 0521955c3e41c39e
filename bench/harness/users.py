"""Users, avatars and conversations for a benchmark: rows in auth.users with access
tokens, then the API's own endpoints for the rest."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import httpx
from tests.support.factories import User

from avatar_chat.auth.tokens import mint_access_token
from bench.harness.cli import step
from bench.harness.session import BenchSession

PERSONALITIES = ("friendly", "professional", "playful", "caring", "witty")


async def create_users(dsn: str, jwt_secret: str, count: int) -> list[User]:
    """Rows in auth.users (as the owner, like the Supabase dashboard) and access tokens."""
    users: list[User] = []
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        run = uuid.uuid4().hex[:8]
        for i in range(count):
            user_id = uuid.uuid4()
            email = f"bench-{run}-{i}@example.test"
            await conn.execute("insert into auth.users (id, email) values ($1, $2)", user_id, email)
            token = mint_access_token(jwt_secret, user_id=user_id, email=email, ttl_s=6 * 3600)
            users.append(User(user_id, email, token))
    finally:
        await conn.close()
    return users


async def create_avatars(base_url: str, users: Sequence[User], concurrency: int = 1) -> None:
    """An avatar for each user through the API, `concurrency` requests at a time."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        await asyncio.gather(*(_create_avatars(client, users, i, concurrency) for i in range(concurrency)))


async def _create_avatars(client: httpx.AsyncClient, users: Sequence[User], first: int, step: int) -> None:
    """Users `first`, `first + step`, ... one after another."""
    for i in range(first, len(users), step):
        response = await client.post(
            "/avatars/me",
            json={
                "name": f"Bench {i}",
                "personality": PERSONALITIES[i % len(PERSONALITIES)],
                "backstory": "A benchmark avatar with a short backstory.",
            },
            headers=users[i].headers,
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /avatars/me: {response.status_code} {response.text}")


def create_conversations(base_url: str, users: Sequence[User], per_user: int) -> list[list[str]]:
    """`per_user` conversations of each user, titled (so no title task runs), modes alternating."""
    ids: list[list[str]] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for user in users:
            mine: list[str] = []
            for i in range(per_user):
                response = client.post(
                    "/conversations",
                    json={"mode": "companion" if i % 2 else "assistant", "title": f"bench {i}"},
                    headers=user.headers,
                )
                if response.status_code != 201:
                    raise RuntimeError(f"POST /conversations: {response.status_code} {response.text}")
                mine.append(response.json()["id"])
            ids.append(mine)
    return ids


async def insert_conversations(dsn: str, users: Sequence[User], title: str) -> list[str]:
    """One titled conversation for each user (so no title task runs), in one statement as
    the owner: quicker than the API for a thousand of them. Ids in the users' order."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "insert into public.conversations (user_id, mode, title)"
            " select u, 'assistant', $2 from unnest($1::uuid[]) with ordinality as t(u, n)"
            " order by n returning id, user_id",
            [u.id for u in users],
            title,
        )
    finally:
        await conn.close()
    ids = {row["user_id"]: str(row["id"]) for row in rows}
    return [ids[u.id] for u in users]


def users_in_database(session: BenchSession, count: int) -> tuple[str, list[User]]:
    """The session's database, migrated, with `count` users in it; its DSN and the users."""
    with step("database"):
        dsn = session.database()
    with step(f"{count} users"):
        users = asyncio.run(create_users(dsn, session.jwt_secret, count))
    return dsn, users


def avatars_and_conversations(base_url: str, users: Sequence[User], servers: int) -> list[list[str]]:
    """An avatar for each user, and a conversation per server each (`[user][server]`)."""
    with step("avatars, a conversation per server each"):
        asyncio.run(create_avatars(base_url, users))
        return create_conversations(base_url, users, servers)
