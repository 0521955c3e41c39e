"""A reply being generated, as the rest of the system sees it while it grows.

Its text so far is saved at a bounded rate (CHAT_PARTIAL_SAVE_MS after the first unsaved
chunk, or at once after CHAT_PARTIAL_SAVE_CHARS new characters), so a client can resume
it on any worker; each save also renews the reply's lease and reads whether a stop was
asked for. Nothing is saved in a reply's first CHAT_PARTIAL_SAVE_MS, however much text
came: a reply that is done by then is saved once, whole, and a follower waits no longer
than the rate allows anyway. With no new text, the lease is renewed every third of it. Writes run beside
the generation, never in its way: a chunk is handed to the client without waiting for
the database, and at most one write is in flight per reply.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from avatar_chat.core.errors import AppError

log = logging.getLogger(__name__)

# save(content or None for "lease only") -> stop requested, or None when no longer ours
Save = Callable[[str | None], Awaitable[bool | None]]


class ReplyProgress:
    def __init__(
        self, reply_id: uuid.UUID, save: Save, *, save_after_s: float, save_after_chars: int, lease_s: float
    ) -> None:
        self.reply_id = reply_id
        self._save = save
        self._save_after_s = save_after_s  # 0: never save partial text, only renew the lease
        self._save_after_chars = save_after_chars
        self._keepalive_s = lease_s / 3
        self.parts: list[str] = []
        self._length = 0
        self._saved_length = 0
        self._writing: asyncio.Task[None] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._early_until = self._loop.time() + save_after_s
        self._keepalive = self._loop.call_later(self._keepalive_s, self._write_soon, False)
        self._closed = False
        self._again = False  # new text arrived while a write was in flight
        self.stop_requested = False  # asked for (here or through the database): stop at the next chunk
        self.lost = False  # the reply is no longer this attempt's (stopped elsewhere, taken over)
        self.saves = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def request_stop(self) -> None:
        """The stop route of this worker found the reply here: no need to wait for a save."""
        self.stop_requested = True

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self._length += len(chunk)
        if not self._save_after_s:
            return
        if (
            self._length - self._saved_length >= self._save_after_chars
            and self._loop.time() >= self._early_until
        ):
            self._write_soon(True)
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(self._save_after_s, self._write_soon, True)

    def _write_soon(self, with_text: bool) -> None:
        if self._closed:
            return
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._writing is not None:
            self._again = self._again or with_text  # written once the one in flight is done
            return
        self._writing = asyncio.create_task(self._write(with_text), name=f"progress-{self.reply_id}")

    async def _write(self, with_text: bool) -> None:
        text = self.text if with_text and self._length > self._saved_length else None
        length = self._length
        try:
            answer = await self._save(text)
        except AppError as exc:
            log.warning("could not save the progress of reply %s: %s", self.reply_id, exc.code)
            answer = False
        finally:
            self._writing = None
        self.saves += 1
        if text is not None:
            self._saved_length = max(self._saved_length, length)
        if answer is None:
            self.lost = True
        elif answer:
            self.stop_requested = True
        if not self._closed:
            self._keepalive.cancel()
            self._keepalive = self._loop.call_later(self._keepalive_s, self._write_soon, False)
            if self._again:
                self._again = False
                if self._length > self._saved_length:
                    self._write_soon(True)

    async def close(self) -> None:
        """No more writes; wait for the one in flight, so the final save comes after it."""
        self._closed = True
        self._keepalive.cancel()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        writing = self._writing
        if writing is not None:
            await asyncio.shield(writing)
