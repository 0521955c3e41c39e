"""One reader of a reply on this worker, shared by every client following it here.

However many clients follow one reply on one worker (`GET .../stream`, a stop waiting for
its end), one task reads it: from memory while this worker generates it (ReplyProgress),
else from the database every CHAT_STREAM_POLL_MS, asking only for the text it does not
have yet. Followers wait for the next change and send their own client what is new to
it. So the database work of following grows with the replies followed, never with the
followers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from avatar_chat.chat.progress import ReplyProgress
from avatar_chat.conversations.schemas import MessageStatus, effective_status
from avatar_chat.core.database import Record
from avatar_chat.core.errors import AppError

# read(offset) -> the reply's state and its text from `offset` on (avatar_chat.reply_progress)
Read = Callable[[int], Awaitable[Record]]


class ReplyWatch:
    def __init__(
        self,
        message_id: uuid.UUID,
        first: Record,
        read: Read,
        local: Callable[[], ReplyProgress | None],
        *,
        poll_s: float,
    ) -> None:
        self.message_id = message_id
        self._read = read
        self._local = local
        self._poll_s = poll_s
        self.row = first  # the latest state read (its `tail` is not used: `text` holds the text)
        # As of the latest read (a lease is judged when read, never later on a stale row).
        self.status = effective_status(first["status"], first["lease_expires_at"])
        self.attempt: int = first["attempt"]
        self.text: str = first["tail"]  # `first` was read from offset 0
        self.error: AppError | None = None
        self.followers = 0
        self.version = 0
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    @property
    def settled(self) -> bool:
        return self.error is not None or self.status != MessageStatus.streaming

    def attach(self) -> None:
        self.followers += 1
        if self._task is None and not self.settled:
            self._task = asyncio.create_task(self._follow(), name=f"watch-{self.message_id}")

    def detach(self) -> bool:
        """One follower fewer; True when it was the last (the reading stops)."""
        self.followers -= 1
        if self.followers > 0:
            return False
        if self._task is not None:
            self._task.cancel()
        return True

    async def changed(self, seen: int) -> None:
        """Returns once there is something newer than version `seen`."""
        while self.version == seen:
            await asyncio.shield(self._changed)

    def _publish(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)

    async def _follow(self) -> None:
        try:
            while not self.settled:
                await asyncio.sleep(self._poll_s)
                local = self._local()
                if local is not None and local.attempt == self.attempt:
                    if len(local.text) > len(self.text):  # generated here: read from memory
                        self.text = local.text
                        self._publish()
                    continue
                row = await self._read(len(self.text))
                if row["attempt"] != self.attempt:  # a retry started it over: read it whole
                    row = await self._read(0)
                    self.attempt, self.text = row["attempt"], row["tail"]
                elif row["length"] > len(self.text):
                    self.text += row["tail"]
                self._take(row)
                if self.status != MessageStatus.streaming:
                    row = await self._read(0)  # the whole reply as it was settled
                    self.attempt, self.text = row["attempt"], row["tail"]
                    self._take(row)
                self._publish()
        except AppError as exc:
            self.error = exc
            self._publish()

    def _take(self, row: Record) -> None:
        self.row = row
        self.status = effective_status(row["status"], row["lease_expires_at"])
