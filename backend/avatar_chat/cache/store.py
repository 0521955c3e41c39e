"""SessionStore: what a chat turn needs, cached in-process, never trusted blindly.

One per worker, guarded by an `asyncio.Lock`. Entries are validated against versions
that Postgres hands back on the write every chat turn makes anyway (the avatar's
`version`, the conversation's previous `seq`), so a stale entry is detected and reloaded
on the very turn that would have used it, whether or not an invalidation reached this
worker: changes made by other workers, other machines, the dashboard or any SQL client
are caught that way, with no notifications. Invalidation after this worker's own
mutations only saves reloads. Both maps are LRU-bounded, so memory stays flat.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class CachedAvatar(Protocol):
    """What the store needs to know of an avatar snapshot (avatars.persona.AvatarSnapshot)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def user_id(self) -> uuid.UUID: ...
    @property
    def version(self) -> int: ...


class CachedWindow(Protocol):
    """What the store needs to know of a window (chat.window.ConversationWindow)."""

    @property
    def conversation_id(self) -> uuid.UUID: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def revision(self) -> int: ...


A = TypeVar("A", bound=CachedAvatar)
W = TypeVar("W", bound=CachedWindow)


@dataclass(slots=True)
class StoreStats:
    avatar_hits: int = 0
    avatar_misses: int = 0
    window_hits: int = 0
    window_misses: int = 0


class SessionStore(Generic[A, W]):
    def __init__(self, *, max_avatars: int, max_conversations: int) -> None:
        self._lock = asyncio.Lock()
        self._avatars: OrderedDict[uuid.UUID, A] = OrderedDict()
        self._windows: OrderedDict[uuid.UUID, W] = OrderedDict()
        self._max_avatars = max_avatars
        self._max_conversations = max_conversations
        self.stats = StoreStats()

    # --- avatars ---------------------------------------------------------------------

    async def avatar(
        self,
        user_id: uuid.UUID,
        *,
        avatar_id: uuid.UUID,
        version: int,
        load: Callable[[], Awaitable[A | None]],
    ) -> A | None:
        """The avatar exactly at (`avatar_id`, `version`), from cache or from `load`.

        `load` runs outside the lock (it does I/O); what it returns is kept unless a
        newer snapshot was stored meanwhile.
        """
        async with self._lock:
            cached = self._avatars.get(user_id)
            if cached is not None and cached.id == avatar_id and cached.version == version:
                self._avatars.move_to_end(user_id)
                self.stats.avatar_hits += 1
                return cached
            self.stats.avatar_misses += 1
        loaded = await load()
        if loaded is not None:
            await self.put_avatar(loaded)
        return loaded

    async def put_avatar(self, snapshot: A) -> None:
        async with self._lock:
            cached = self._avatars.get(snapshot.user_id)
            if cached is not None and cached.id == snapshot.id and cached.version > snapshot.version:
                return  # a slower load must not replace a newer snapshot
            self._avatars[snapshot.user_id] = snapshot
            self._avatars.move_to_end(snapshot.user_id)
            while len(self._avatars) > self._max_avatars:
                self._avatars.popitem(last=False)

    def may_hold_avatar(self, user_id: uuid.UUID) -> bool:
        """A lock-free hint (a dict lookup cannot interleave with a coroutine): False
        means there is certainly nothing to evict."""
        return user_id in self._avatars

    async def peek_avatar(self, user_id: uuid.UUID) -> A | None:
        """What is cached for the user, without touching LRU order or stats."""
        async with self._lock:
            return self._avatars.get(user_id)

    async def clear_avatar_cache(self, user_id: uuid.UUID | None = None) -> None:
        """Forget one user's avatar (after a mutation), or every avatar."""
        async with self._lock:
            if user_id is None:
                self._avatars.clear()
            else:
                self._avatars.pop(user_id, None)

    # --- conversation windows --------------------------------------------------------

    async def window(self, conversation_id: uuid.UUID, *, last_seq: int, revision: int) -> W | None:
        """The cached window if it ends exactly at `last_seq` of `revision`, else None."""
        async with self._lock:
            cached = self._windows.get(conversation_id)
            if cached is not None and cached.last_seq == last_seq and cached.revision == revision:
                self._windows.move_to_end(conversation_id)
                self.stats.window_hits += 1
                return cached
            self.stats.window_misses += 1
            return None

    async def put_window(self, window: W) -> None:
        async with self._lock:
            cached = self._windows.get(window.conversation_id)
            if cached is not None and (cached.revision, cached.last_seq) > (window.revision, window.last_seq):
                return
            self._windows[window.conversation_id] = window
            self._windows.move_to_end(window.conversation_id)
            while len(self._windows) > self._max_conversations:
                self._windows.popitem(last=False)

    async def invalidate_conversation(self, conversation_id: uuid.UUID) -> None:
        async with self._lock:
            self._windows.pop(conversation_id, None)

    def __len__(self) -> int:
        return len(self._avatars) + len(self._windows)
