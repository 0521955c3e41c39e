"""The SSE streams each user holds open on this worker (streamed sends, regenerations and
edits, and follows), capped by MAX_OPEN_STREAMS_PER_USER: one user cannot hold a worker's
connections, memory and readers with a thousand streams. Counted per worker (a count in
memory, nothing shared): across a deployment a user holds at most workers x the cap.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

from avatar_chat.core.errors import TooManyRequests


class OpenStreams:
    def __init__(self, cap: int) -> None:
        self._cap = cap  # 0: no cap
        self._open: dict[uuid.UUID, int] = {}

    def open(self, user_id: uuid.UUID) -> Callable[[], None]:
        """Count one more stream of `user_id`, or refuse it (429 `too_many_streams`); the
        answer closes it, once."""
        held = self._open.get(user_id, 0)
        if self._cap and held >= self._cap:
            raise TooManyRequests(
                f"At most {self._cap} streams may be open at once; close one first.",
                code="too_many_streams",
                headers={"Retry-After": "2"},
            )
        self._open[user_id] = held + 1
        closed = False

        def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            left = self._open[user_id] - 1
            if left:
                self._open[user_id] = left
            else:
                del self._open[user_id]

        return close

    def count(self, user_id: uuid.UUID) -> int:
        return self._open.get(user_id, 0)


async def closing(stream: AsyncIterator[str], close: Callable[[], None]) -> AsyncIterator[str]:
    """`stream`, then `close()`, however it ends (done, error, the client gone)."""
    try:
        async for part in stream:
            yield part
    finally:
        close()
