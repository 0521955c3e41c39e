"""SessionStore: what a chat turn needs, cached in-process, never trusted blindly.

One per worker, guarded by an `asyncio.Lock`. A turn sends the version stamps of what is
cached here (the avatar's id and `version`, the window's last `seq` and the
conversation's `revision`) with the write it makes anyway (begin_turn), and Postgres
answers with fresh data wherever a stamp does not match, in the same round trip. So a
stale entry is never used, whether the change came from this worker, another worker or
machine, the dashboard or any SQL client, and with no notifications. Invalidation after
this worker's own mutations only saves shipping data again. Both maps are LRU-bounded,
so memory stays flat.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from avatar_chat.core.metrics import Incrementer, StoreMetrics


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
T = TypeVar("T")


def _put_last(entries: OrderedDict[uuid.UUID, T], key: uuid.UUID, value: T, maximum: int) -> int:
    """Put `value` as the most recently used entry and drop the least recently used past
    `maximum` (the LRU bound): how many were dropped."""
    entries[key] = value
    entries.move_to_end(key)
    dropped = 0
    while len(entries) > maximum:
        entries.popitem(last=False)
        dropped += 1
    return dropped


@dataclass(slots=True)
class LookupStats:
    """One kind's lookups by turns, and its entries dropped by the LRU bound. A miss had
    nothing cached; a stale lookup had an entry whose version stamp no longer matched
    (changed by another worker, the dashboard, SQL...), so it was reloaded."""

    hits: int = 0
    misses: int = 0
    stale: int = 0
    evictions: int = 0

    def note(self, results: Mapping[str, Incrementer], *, cached: bool, matched: bool) -> None:
        """Count one lookup here and in `results`, its metrics by result."""
        if matched:
            self.hits += 1
            results["hit"].inc()
        elif cached:
            self.stale += 1
            results["stale"].inc()
        else:
            self.misses += 1
            results["miss"].inc()


@dataclass(slots=True)
class StoreStats:
    """What the store did for turns, in this worker (also reported as metrics, all workers)."""

    avatar: LookupStats = field(default_factory=LookupStats)
    window: LookupStats = field(default_factory=LookupStats)


class SessionStore(Generic[A, W]):
    def __init__(
        self, *, max_avatars: int, max_conversations: int, metrics: StoreMetrics | None = None
    ) -> None:
        self._lock = asyncio.Lock()
        self._avatars: OrderedDict[uuid.UUID, A] = OrderedDict()
        self._windows: OrderedDict[uuid.UUID, W] = OrderedDict()
        self._max_avatars = max_avatars
        self._max_conversations = max_conversations
        self.stats = StoreStats()
        self._metrics = metrics or StoreMetrics()

    async def for_turn(self, user_id: uuid.UUID, conversation_id: uuid.UUID) -> tuple[A | None, W | None]:
        """What is cached for a chat turn: candidates only. The turn sends their version
        stamps to begin_turn, which answers with fresh data wherever they do not match."""
        async with self._lock:
            avatar = self._avatars.get(user_id)
            if avatar is not None:
                self._avatars.move_to_end(user_id)
            window = self._windows.get(conversation_id)
            if window is not None:
                self._windows.move_to_end(conversation_id)
            return avatar, window

    def note_avatar(self, *, cached: bool, matched: bool) -> None:
        """Whether a turn had an avatar cached, and whether its stamp matched (stats only)."""
        self.stats.avatar.note(self._metrics.avatar, cached=cached, matched=matched)

    def note_window(self, *, cached: bool, matched: bool) -> None:
        """Whether a turn had a window cached, and whether its stamp matched (stats only)."""
        self.stats.window.note(self._metrics.window, cached=cached, matched=matched)

    @property
    def avatar_count(self) -> int:
        return len(self._avatars)

    @property
    def window_count(self) -> int:
        return len(self._windows)

    # --- avatars ---------------------------------------------------------------------

    async def put_avatar(self, snapshot: A) -> None:
        async with self._lock:
            cached = self._avatars.get(snapshot.user_id)
            if cached is not None and cached.id == snapshot.id and cached.version > snapshot.version:
                return  # a slower turn must not replace a newer snapshot
            if dropped := _put_last(self._avatars, snapshot.user_id, snapshot, self._max_avatars):
                self.stats.avatar.evictions += dropped
                self._metrics.avatar_evictions.inc(dropped)

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

    async def put_window(self, window: W) -> None:
        async with self._lock:
            cached = self._windows.get(window.conversation_id)
            if cached is not None and (cached.revision, cached.last_seq) > (window.revision, window.last_seq):
                return
            if dropped := _put_last(self._windows, window.conversation_id, window, self._max_conversations):
                self.stats.window.evictions += dropped
                self._metrics.window_evictions.inc(dropped)

    async def invalidate_conversation(self, conversation_id: uuid.UUID) -> None:
        async with self._lock:
            self._windows.pop(conversation_id, None)

    def __len__(self) -> int:
        return len(self._avatars) + len(self._windows)
