"""A reply being generated, as the rest of the system sees it while it grows.

Its text so far is saved only while someone needs it before the reply ends: a client
following it from any worker, or a stop asked for on another worker (chat.demand finds
those out and calls `demand`). From then on it is saved at a bounded rate
(CHAT_PARTIAL_SAVE_MS after the first unsaved chunk, or at once after
CHAT_PARTIAL_SAVE_CHARS new characters), the first save right away; each save also reads
whether a stop was asked for. A reply nobody asks for is written once, when it is settled.
Writes run beside the generation, never in its way: a chunk is handed to the client without
waiting for the database, and at most one write is in flight per reply.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from avatar_chat.core.errors import AppError

log = logging.getLogger(__name__)

# save(content) -> stop requested, or None when no longer ours
Save = Callable[[str], Awaitable[bool | None]]


class ReplyProgress:
    def __init__(
        self,
        reply_id: uuid.UUID,
        save: Save,
        *,
        save_after_s: float,
        save_after_chars: int,
        attempt: int = 1,
        demanded: bool = False,
    ) -> None:
        self.reply_id = reply_id
        self.attempt = attempt
        self._save = save
        self._save_after_s = save_after_s  # 0: never save partial text
        self._save_after_chars = save_after_chars
        self.parts: list[str] = []
        self._length = 0
        self._saved_length = 0
        self._writing: asyncio.Task[None] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._again = False  # new text arrived while a write was in flight
        self.demanded = False  # someone follows it, or asked to stop it: save as it grows
        self.stop_requested = False  # asked for (here or through the database): stop at the next chunk
        self.lost = False  # the reply is no longer this attempt's (stopped elsewhere, taken over)
        self.saves = 0
        if demanded:
            self.demand()

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def request_stop(self) -> None:
        """A stop was asked for, here or on another worker: stop at the next chunk."""
        self.stop_requested = True

    def demand(self) -> None:
        """Someone needs the text before the reply ends: save what there is now, and from
        now on as it grows."""
        if self.demanded or not self._save_after_s:
            return
        self.demanded = True
        if self._length > self._saved_length:
            self._write_soon()

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self._length += len(chunk)
        if not self.demanded:
            return
        if self._length - self._saved_length >= self._save_after_chars:
            self._write_soon()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(self._save_after_s, self._write_soon)

    def _write_soon(self) -> None:
        if self._closed:
            return
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._writing is not None:
            self._again = True  # written once the one in flight is done
            return
        self._writing = asyncio.create_task(self._write(), name=f"progress-{self.reply_id}")

    async def _write(self) -> None:
        length = self._length
        try:
            answer = await self._save(self.text)
        except AppError as exc:
            log.warning("could not save the progress of reply %s: %s", self.reply_id, exc.code)
            answer = False
        finally:
            self._writing = None
        self.saves += 1
        self._saved_length = max(self._saved_length, length)
        if answer is None:
            self.lost = True
        elif answer:
            self.stop_requested = True
        if self._again and not self._closed:
            self._again = False
            if self._length > self._saved_length:
                self._write_soon()

    async def close(self) -> None:
        """No more writes; wait for the one in flight, so the final save comes after it."""
        self._closed = True
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        writing = self._writing
        if writing is not None:
            await asyncio.shield(writing)
