"""This worker's liveness, as a row other workers can read: `avatar_chat.workers`.

A reply being generated records the id of the worker generating it. Other workers (on
any machine) treat that reply as in progress only while the worker's row has not
expired; once it has (the worker crashed, or lost the database for longer than its TTL),
a retry with the same Idempotency-Key takes the reply over. The row is renewed every
third of the TTL in its own short transaction: no session state, so this works through
a transaction-mode pooler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

import asyncpg

from avatar_chat.core.database import Database
from avatar_chat.core.errors import AppError

log = logging.getLogger(__name__)


class WorkerHeartbeat:
    def __init__(self, db: Database, *, ttl_s: float) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self.id = secrets.randbelow(2**62) + 1
        self._host = socket.gethostname()
        self._task: asyncio.Task[None] | None = None
        self._alive_until = float("-inf")  # loop time until which our row is known to be live

    def live_id(self) -> int | None:
        """This worker's id while its row is known to be live, else None: a reply then
        relies on its lease alone (CHAT_REPLY_LEASE_S)."""
        return self.id if asyncio.get_running_loop().time() < self._alive_until else None

    async def start(self) -> None:
        """Register now (a database that is away only delays it), then renew in the background."""
        await self._beat()
        self._task = asyncio.create_task(self._renew(), name="worker-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._alive_until = float("-inf")
        try:
            async with self._db.connection() as conn:
                await conn.execute("select avatar_chat.worker_leave($1)", self.id)
        except (AppError, asyncpg.PostgresError):
            log.warning("could not remove worker %s; its row expires in %.0f s", self.id, self._ttl_s)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            await self._beat()

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._db.connection() as conn:
                await conn.execute(
                    "select avatar_chat.worker_heartbeat($1, $2, $3, $4)",
                    self.id,
                    self._ttl_s,
                    self._host,
                    os.getpid(),
                )
        except AppError as exc:
            log.warning("worker heartbeat failed: %s", exc.code)
            return
        except asyncpg.PostgresError as exc:  # e.g. a schema older than this build (see /ready)
            log.warning("worker heartbeat failed: %s", exc.sqlstate)
            return
        # Counted from before the round trip: the row may expire that much sooner.
        self._alive_until = started + self._ttl_s
