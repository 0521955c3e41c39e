"""A burst that finds every pooled connection busy waits its turn in a bounded queue.

A real pool of one connection on the test database: while it is held, requests queue (up
to DB_ACQUIRE_QUEUE_MAX, the rest are told at once) and each gets the connection in turn
once it is free; one that waits past DB_ACQUIRE_TIMEOUT_S gets 503 `database_busy`, which
is not `database_unavailable`: the database is up.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from avatar_chat.core.database import Database
from avatar_chat.core.errors import DatabaseBusy
from avatar_chat.core.settings import Settings
from tests.support.apps import own_app
from tests.support.assertions import assert_error
from tests.support.factories import User


def _one_connection(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update={"db_pool_min_size": 1, "db_pool_max_size": 1, **update})


async def test_a_busy_pool_queues_then_answers_database_busy(settings: Settings, database_url: str) -> None:
    db = await Database.connect(
        database_url, _one_connection(settings, db_acquire_timeout_s=1.5, db_acquire_queue_max=3)
    )
    try:
        async with db.connection():
            queued = [asyncio.create_task(db.ping()) for _ in range(3)]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises(DatabaseBusy):
                await db.ping()  # a fourth: the queue is full, told at once
            assert time.monotonic() - started < 0.2
            await asyncio.sleep(0.5)  # held for less than the timeout
        await asyncio.gather(*queued)  # each got the connection in turn

        async with db.connection():  # held past the timeout
            started = time.monotonic()
            with pytest.raises(DatabaseBusy) as caught:
                await db.ping()
            assert 1.4 < time.monotonic() - started < 3.0
        assert (caught.value.status_code, caught.value.code) == (503, "database_busy")
        assert caught.value.headers["Retry-After"] == "2"
        await db.ping()  # free again
    finally:
        await db.close()


async def test_a_request_waits_for_a_busy_pool_then_is_answered(settings: Settings, user: User) -> None:
    configured = _one_connection(settings, db_acquire_timeout_s=3.0)
    async with own_app(configured) as (client, state):
        async with state.db.connection():
            waiting = asyncio.create_task(
                client.post("/avatars/me", json={"name": "Ada"}, headers=user.headers)
            )
            await asyncio.sleep(2.0)  # longer than the old 2 s limit
            assert not waiting.done()
        assert (await waiting).status_code == 201
        async with state.db.connection():
            refused = await client.get("/avatars/me", headers=user.headers)
        assert_error(refused, 503, "database_busy")
        assert isinstance(refused, httpx.Response) and refused.headers["Retry-After"] == "2"
