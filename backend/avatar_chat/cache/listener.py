"""One LISTEN connection per worker: evicts what other writers changed, and shows that
this worker is alive (it holds an advisory lock keyed by `worker_id` while connected).

The avatars and conversations triggers NOTIFY on channel `avatar_chat` at commit. When
the connection drops (database restart, network), notifications may have been missed,
so the whole store is flushed once LISTEN is back, and the loop reconnects with
backoff. Chat turns never depend on this for correctness (they compare versions); it
keeps memory honest and avoids reloads. Needs a direct or session-mode connection: a
transaction-mode pooler cannot carry LISTEN.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import uuid
from typing import Any

import asyncpg

from avatar_chat.cache.store import SessionStore

log = logging.getLogger(__name__)

CHANNEL = "avatar_chat"


class InvalidationListener:
    def __init__(
        self,
        dsn: str,
        store: SessionStore[Any, Any],
        *,
        connect_timeout_s: float = 5.0,
        health_interval_s: float = 5.0,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._store = store
        self._connect_timeout = connect_timeout_s
        self._health_interval = health_interval_s
        self._min_backoff = min_backoff_s
        self._max_backoff = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self.reconnects = 0
        # Held as a session advisory lock on the LISTEN connection: other workers can see
        # in pg_locks that this one is alive (replies it generates record this id).
        self.worker_id = secrets.randbelow(2**62) + 1

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def live_worker_id(self) -> int | None:
        """This worker's id while its liveness lock is held, else None (lease only)."""
        return self.worker_id if self._connected.is_set() else None

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="invalidation-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _run(self) -> None:
        backoff = self._min_backoff
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout,
                    statement_cache_size=0,
                    server_settings={"application_name": "avatar-chat-listener"},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                await conn.execute("select pg_advisory_lock($1)", self.worker_id)
                # LISTEN is in place: from here nothing is missed, so drop whatever we
                # may have missed before (first start, or while disconnected).
                await self._store.flush()
                self._connected.set()
                backoff = self._min_backoff
                log.info("invalidation listener connected")
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), self._health_interval)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("select 1"), self._connect_timeout)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("invalidation listener lost the database: %s", exc)
            finally:
                was_connected = self._connected.is_set()
                self._connected.clear()
                if conn is not None:
                    conn.terminate()
                if was_connected:
                    self.reconnects += 1
                    await self._store.flush()
            await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
            backoff = min(backoff * 2, self._max_backoff)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            event = json.loads(str(payload))
            table = event.get("table")
            if table == "avatars":
                user_id = uuid.UUID(event["user_id"])
                if not self._store.may_hold_avatar(user_id):
                    return  # the usual case for our own writes: already evicted in-process
                coro = self._store.clear_avatar_cache(user_id)
            elif table == "conversations":
                coro = self._store.invalidate_conversation(uuid.UUID(event["id"]))
            else:
                return
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring malformed notification: %r", payload)
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
