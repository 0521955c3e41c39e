"""The asyncpg pool, and units of work run on a user's behalf under RLS.

Every statement made for a user runs as Postgres role `authenticated` with the user's
verified claims in `request.jwt.claims`, exactly as Supabase's Data API (PostgREST) runs
it, so the same row level security policies guard both. One SQL helper sets both,
`avatar_chat.act_as(claims)`: called by every `avatar_chat` function that acts for a
user (`Database.call_as`, one round trip) and by the transaction opener
(`Database.as_user`). Both settings are transaction-local, so a pooled connection never
carries one user's identity into the next request, also behind a transaction-mode pooler.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from avatar_chat.core.claims import Claims
from avatar_chat.core.db_errors import UNAVAILABLE, raise_translated, translate_errors
from avatar_chat.core.errors import AppError, DatabaseBusy
from avatar_chat.core.metrics import PoolMetrics
from avatar_chat.core.settings import PoolMode, Settings

log = logging.getLogger(__name__)

Record: TypeAlias = asyncpg.Record
Connection: TypeAlias = "asyncpg.Connection[Record] | PoolConnectionProxy[Record]"


def begin_as_user_sql(claims: Claims, *, snapshot: bool = False) -> str:
    """`BEGIN` plus `avatar_chat.act_as(claims)`, as one simple-protocol round trip;
    `snapshot`: a read-only transaction that sees one snapshot throughout (repeatable read).

    The claims travel base64-encoded, so nothing in them can break out of the literal.
    """
    encoded = base64.b64encode(claims.as_json().encode()).decode("ascii")
    begin = "begin isolation level repeatable read read only" if snapshot else "begin"
    return f"{begin}; select avatar_chat.act_as(convert_from(decode('{encoded}', 'base64'), 'utf8'))"


async def _rollback_or_discard(conn: Connection) -> None:
    if conn.is_closed():
        return
    try:
        await asyncio.wait_for(conn.execute("rollback"), 2)
    except (Exception, asyncio.CancelledError):
        # Mid-operation (timeout, cancelled client) or gone: never hand it out again.
        log.debug("rollback failed; discarding the connection", exc_info=True)
        conn.terminate()


async def _init_connection(conn: Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_reset(_: Connection) -> None:
    # asyncpg already rolls back an open transaction on release; we keep no session
    # state (role and claims are transaction-local), so its RESET ALL round trip is waste.
    return None


def _busy() -> DatabaseBusy:
    return DatabaseBusy("Every database connection is busy; retry shortly.", retry_after_s=2)


class Database:
    """The pool, created in lifespan and handed out through dependencies."""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, *, mode: PoolMode, metrics: PoolMetrics | None = None
    ) -> None:
        self.pool = pool
        self.mode = mode
        self._acquire_timeout = settings.db_acquire_timeout_s
        self._queue_max = settings.db_acquire_queue_max
        self._waiting = 0  # acquires in progress: the queue for a connection
        self._metrics = metrics or PoolMetrics()

    @classmethod
    async def connect(cls, dsn: str, settings: Settings, *, metrics: PoolMetrics | None = None) -> Database:
        mode = settings.pool_mode_for(dsn)
        cache_size = settings.db_statement_cache_size
        if cache_size is None:
            # A transaction pooler hands each transaction any server connection, where our
            # named statements do not exist (Supavisor and pgbouncer < 1.21 do not track
            # them): use unnamed ones, which asyncpg parses and runs within one transaction.
            cache_size = 0 if mode is PoolMode.transaction else 100
        options: dict[str, Any] = {
            "max_size": settings.db_pool_max_size,
            "timeout": settings.db_connect_timeout_s,
            # Enforced by the client (it cancels the statement through the cancel protocol,
            # which poolers forward), not by a session-level statement_timeout, which a
            # transaction pooler could not keep: no session state at all.
            "command_timeout": (settings.db_statement_timeout_ms / 1000 or None),
            "statement_cache_size": cache_size,
            "max_inactive_connection_lifetime": 300,
            # The one startup parameter poolers carry to every server connection they use.
            "server_settings": {"application_name": "avatar-chat"},
            "init": _init_connection,
            "reset": _no_reset,
        }
        try:
            pool = await asyncpg.create_pool(dsn, min_size=settings.db_pool_min_size, **options)
        except UNAVAILABLE as exc:
            # Start anyway: answer 503 (and /ready 503) until the database is back, rather
            # than crash-looping a worker that a supervisor restarted during an outage.
            log.warning("database unreachable at start-up (%s); serving 503 until it is back", exc)
            pool = await asyncpg.create_pool(dsn, min_size=0, **options)
        log.info("database pool: %s mode, statement cache %d", mode.value, cache_size)
        return cls(pool, settings, mode=mode, metrics=metrics)

    async def close(self, timeout_s: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout_s)
        except TimeoutError:
            self.pool.terminate()

    async def _acquire(self) -> PoolConnectionProxy[Record]:
        """A pooled connection, in turn: a burst waits in a bounded queue (DB_ACQUIRE_QUEUE_MAX,
        each for up to DB_ACQUIRE_TIMEOUT_S) rather than failing, and a busy pool answers
        DatabaseBusy, apart from the database being unreachable (errors in UNAVAILABLE)."""
        if self._waiting >= self._queue_max:
            self._metrics.acquire_timeouts.inc()
            raise _busy()
        # asyncio.timeout rather than acquire(timeout=): the latter wraps every acquire
        # in wait_for, an extra task per request on the hot path.
        started = time.perf_counter()
        self._waiting += 1
        try:
            async with asyncio.timeout(self._acquire_timeout):
                conn: PoolConnectionProxy[Record] = await self.pool.acquire()
        except TimeoutError:
            self._metrics.acquire_timeouts.inc()
            raise _busy() from None
        except UNAVAILABLE:
            self._metrics.acquire_unavailable.inc()
            raise
        finally:
            self._waiting -= 1
        self._metrics.acquire_seconds.observe(time.perf_counter() - started)
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit; acquiring is bounded in time. Database
        errors raised while it is held, here or in the caller's block, leave translated."""
        with translate_errors():
            conn = await self._acquire()
            try:
                yield conn
            finally:
                await self.pool.release(conn)

    @asynccontextmanager
    async def as_user(self, user: Claims, *, snapshot: bool = False) -> AsyncIterator[Connection]:
        """One transaction as the user: committed on success, rolled back on any error.
        Three round trips at least (begin and act_as, the statements, commit): for a
        single statement, `call_as` takes one. `snapshot`: read-only, one snapshot
        (repeatable read) for every statement in it."""
        async with self.connection() as conn:
            try:
                await conn.execute(begin_as_user_sql(user, snapshot=snapshot))
            except BaseException:
                await _rollback_or_discard(conn)  # act_as refused: the transaction is open, aborted
                raise
            try:
                yield conn
            except BaseException:
                await _rollback_or_discard(conn)
                raise
            await conn.execute("commit")

    async def call_as(self, user: Claims, call: str, *args: Any) -> Record | None:
        """One round trip as the user: `call` invokes an `avatar_chat` function that takes
        the caller's claims as its first argument (`$1`) and starts with
        `avatar_chat.act_as(claims)`; it runs in its own implicit transaction."""
        # The hot path of every chat turn and persona switch: what `connection()` does,
        # without its two generator-based context managers.
        try:
            conn = await self._acquire()
            try:
                return await conn.fetchrow(call, user.as_json(), *args)
            finally:
                await self.pool.release(conn)
        except AppError:
            raise
        except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
            raise_translated(exc)

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.execute("select 1")
