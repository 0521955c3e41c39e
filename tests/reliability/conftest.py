"""A Postgres of their own for tests that stop and restart it (always embedded, so a
shared TEST_DATABASE_URL is never taken down)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from avatar_chat.ops.embedded import EmbeddedPostgres
from avatar_chat.ops.migrate import migrate


@dataclass
class Faulty:
    pg: EmbeddedPostgres
    dsn: str

    async def stop(self) -> None:
        await asyncio.to_thread(self.pg.stop)

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.resume)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)


@pytest.fixture(scope="session")
async def faulty(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Faulty]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("faulty"), stop_on_exit=False)
    dsn = await asyncio.to_thread(pg.start)
    await migrate(dsn)
    yield Faulty(pg, dsn)
    with contextlib.suppress(Exception):  # already stopped by a test is fine
        await asyncio.to_thread(pg.stop)
