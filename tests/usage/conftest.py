"""Plans for one test: each test makes its own (unique names), so the shared default plan
and other tests' users are never touched."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.support.factories import User

MakePlan = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_plan(owner: asyncpg.Connection) -> AsyncIterator[MakePlan]:
    """`await make_plan(messages_per_day=10, ...)`: a new plan with these limits, its name."""
    made: list[str] = []

    async def make(**limits: object) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        columns = ["name", *limits]
        values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        await owner.execute(
            f"insert into public.plans ({', '.join(columns)}) values ({values})", name, *limits.values()
        )
        made.append(name)
        return name

    yield make
    await owner.execute("delete from public.user_plans where plan = any($1::text[])", made)
    await owner.execute("delete from public.plans where name = any($1::text[])", made)


async def assign(
    owner: asyncpg.Connection, user: User, plan: str | None, time_zone: str | None = None
) -> None:
    """What the operator does in the dashboard: the user's row in public.user_plans."""
    await owner.execute(
        "insert into public.user_plans (user_id, plan, time_zone) values ($1, $2, $3)"
        " on conflict (user_id) do update set plan = excluded.plan, time_zone = excluded.time_zone,"
        " updated_at = now()",
        user.id,
        plan,
        time_zone,
    )
