"""The replies this worker is generating, and who needs their text before they end.

A reply's text so far is worth saving only for a client that follows it from any worker
(`GET .../stream`, which marks it followed in the database) or for a stop asked for on
another worker. While this worker generates any reply, one statement every
CHAT_DEMAND_POLL_MS (`avatar_chat.worker_replies`) answers which of its replies are in
such demand, for all of them at once; those are saved as they grow from then on
(ReplyProgress.demand), the others only once, when they end. Every quarter lease the same
statement renews the leases of those with less than half left, so a reply's lease costs
one row write per half lease, not a transaction of its own.

A reply admitted while this worker's liveness row was not known to be live records no
worker (begin_turn): nobody could find it by worker, so it is saved as it grows from the
start, as if followed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from avatar_chat.chat import repository
from avatar_chat.chat.progress import ReplyProgress
from avatar_chat.core.database import Database, Record
from avatar_chat.core.errors import AppError
from avatar_chat.core.tasks import TaskTracker

log = logging.getLogger(__name__)


class GeneratingReplies:
    def __init__(
        self,
        db: Database,
        tasks: TaskTracker,
        *,
        worker_id: Callable[[], int | None],
        poll_s: float,
        lease_s: float,
    ) -> None:
        self._db = db
        self._tasks = tasks  # the watch is tracked work: shutdown waits for it like for the replies
        self._worker_id = worker_id
        self._lease_s = lease_s
        # A lease is renewed once less than half is left, asked every quarter lease: it
        # always has a quarter left when renewed.
        self._renew_every_s = lease_s / 4
        self._poll_s = min(poll_s, self._renew_every_s)
        self._replies: dict[uuid.UUID, ReplyProgress] = {}
        self._watch: asyncio.Task[Any] | None = None
        self.polls = 0

    def get(self, reply_id: uuid.UUID) -> ReplyProgress | None:
        return self._replies.get(reply_id)

    def add(self, progress: ReplyProgress) -> None:
        self._replies[progress.reply_id] = progress
        if self._watch is None or self._watch.done():
            self._watch = self._tasks.spawn(self._watch_while_any(), name="reply-demand")

    def discard(self, reply_id: uuid.UUID) -> None:
        self._replies.pop(reply_id, None)

    async def _watch_while_any(self) -> None:
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self._renew_every_s
        while self._replies:
            await asyncio.sleep(self._poll_s)
            renew = loop.time() >= renew_at
            if renew:
                renew_at = loop.time() + self._renew_every_s
            try:
                rows = await self._ask(list(self._replies) if renew else [])
            except (AppError, asyncpg.PostgresError) as exc:
                # The database is away or busy: a reply's own saves still renew its lease,
                # and the next poll asks again.
                log.warning("could not poll this worker's replies: %s", getattr(exc, "code", exc))
                continue
            for row in rows:
                progress = self._replies.get(row["id"])
                if progress is None:
                    continue
                if row["stop_requested"]:
                    progress.request_stop()
                progress.demand()

    async def _ask(self, renew: list[uuid.UUID]) -> list[Record]:
        self.polls += 1
        return await repository.worker_replies(
            self._db, worker_id=self._worker_id(), renew=renew, lease_s=self._lease_s
        )
