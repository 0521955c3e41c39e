"""SessionStore under many concurrent tasks: never hands out the wrong version."""

from __future__ import annotations

import asyncio
import random
import uuid

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat.window import ConversationWindow, WindowMessage


def snapshot(user_id: uuid.UUID, avatar_id: uuid.UUID, version: int) -> AvatarSnapshot:
    return AvatarSnapshot(
        id=avatar_id,
        user_id=user_id,
        name="Ava",
        personality=f"p{version}",
        backstory="",
        version=version,
    )


async def test_hit_miss_and_invalidation() -> None:
    store: SessionStore[AvatarSnapshot, ConversationWindow] = SessionStore(
        max_avatars=10, max_conversations=10
    )
    user, avatar = uuid.uuid4(), uuid.uuid4()
    loads = 0

    async def load() -> AvatarSnapshot:
        nonlocal loads
        loads += 1
        return snapshot(user, avatar, 3)

    assert (await store.avatar(user, avatar_id=avatar, version=3, load=load)) == snapshot(user, avatar, 3)
    assert (await store.avatar(user, avatar_id=avatar, version=3, load=load)) is not None
    assert loads == 1
    await store.clear_avatar_cache(user)
    await store.avatar(user, avatar_id=avatar, version=3, load=load)
    assert loads == 2
    # A re-created avatar (new id, version 1 again) is never confused with the old one.
    new_avatar = uuid.uuid4()

    async def load_new() -> AvatarSnapshot:
        return snapshot(user, new_avatar, 1)

    got = await store.avatar(user, avatar_id=new_avatar, version=1, load=load_new)
    assert got is not None and got.id == new_avatar


async def test_slow_stale_load_does_not_replace_newer_snapshot() -> None:
    store: SessionStore[AvatarSnapshot, ConversationWindow] = SessionStore(
        max_avatars=10, max_conversations=10
    )
    user, avatar = uuid.uuid4(), uuid.uuid4()
    await store.put_avatar(snapshot(user, avatar, 5))
    await store.put_avatar(snapshot(user, avatar, 4))
    hit = await store.avatar(user, avatar_id=avatar, version=5, load=_never)
    assert hit is not None and hit.version == 5


async def _never() -> AvatarSnapshot:
    raise AssertionError("must be served from cache")


async def test_many_concurrent_tasks_always_get_the_version_they_asked_for() -> None:
    store: SessionStore[AvatarSnapshot, ConversationWindow] = SessionStore(max_avatars=8, max_conversations=8)
    users = [(uuid.uuid4(), uuid.uuid4()) for _ in range(20)]
    current = {u: 1 for u, _ in users}
    wrong: list[tuple[int, int]] = []

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            user, avatar = rng.choice(users)
            action = rng.random()
            if action < 0.2:
                current[user] += 1  # a committed update somewhere...
                await store.clear_avatar_cache(user)  # ...and its invalidation
            elif action < 0.25:
                await store.clear_avatar_cache()  # forget every avatar
            else:
                wanted = current[user]

                async def load(user: uuid.UUID = user, avatar: uuid.UUID = avatar) -> AvatarSnapshot:
                    await asyncio.sleep(rng.random() / 1000)  # I/O, outside the lock
                    return snapshot(user, avatar, current[user])

                got = await store.avatar(user, avatar_id=avatar, version=wanted, load=load)
                assert got is not None
                # A load may see a newer committed version, never an older one.
                if got.version < wanted:
                    wrong.append((got.version, wanted))
            assert len(store._avatars) <= 8

    await asyncio.gather(*(worker(seed) for seed in range(50)))
    assert wrong == []
    assert store.stats.avatar_hits > 0 and store.stats.avatar_misses > 0


async def test_windows_are_validated_by_last_seq_and_bounded() -> None:
    store: SessionStore[AvatarSnapshot, ConversationWindow] = SessionStore(max_avatars=2, max_conversations=3)
    conversations = [uuid.uuid4() for _ in range(5)]
    for cid in conversations:
        await store.put_window(
            ConversationWindow(
                cid, 2, 0, (WindowMessage(1, "user", "hi"), WindowMessage(2, "assistant", "yo"))
            )
        )
    assert await store.window(conversations[0], last_seq=2, revision=0) is None  # evicted (LRU)
    assert await store.window(conversations[4], last_seq=2, revision=0) is not None
    assert (
        await store.window(conversations[4], last_seq=4, revision=0) is None
    )  # someone else wrote meanwhile
    await store.put_window(ConversationWindow(conversations[4], 1, 0, ()))  # older: ignored
    assert await store.window(conversations[4], last_seq=2, revision=0) is not None
    assert await store.window(conversations[4], last_seq=2, revision=1) is None  # history edited
    await store.invalidate_conversation(conversations[4])
    assert await store.window(conversations[4], last_seq=2, revision=0) is None
