"""SessionStore: bounded, never goes back to an older entry, forgets on invalidation.

Whether a cached entry may be used is decided by Postgres (begin_turn compares the
stamps the store hands out); these tests cover what the store itself promises."""

from __future__ import annotations

import asyncio
import random
import uuid

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.cache.store import SessionStore
from avatar_chat.chat.window import ConversationWindow, WindowMessage
from tests.support.factories import avatar_snapshot

Store = SessionStore[AvatarSnapshot, ConversationWindow]


def snapshot(user_id: uuid.UUID, avatar_id: uuid.UUID, version: int) -> AvatarSnapshot:
    return avatar_snapshot(id=avatar_id, user_id=user_id, personality=f"p{version}", version=version)


def window(conversation_id: uuid.UUID, last_seq: int, revision: int = 0) -> ConversationWindow:
    return ConversationWindow(
        conversation_id, last_seq, revision, (WindowMessage(last_seq, "assistant", "yo"),)
    )


async def test_candidates_and_invalidation() -> None:
    store: Store = SessionStore(max_avatars=10, max_conversations=10)
    user, avatar, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await store.for_turn(user, conversation) == (None, None)
    await store.put_avatar(snapshot(user, avatar, 3))
    await store.put_window(window(conversation, 4))
    assert await store.for_turn(user, conversation) == (snapshot(user, avatar, 3), window(conversation, 4))
    await store.clear_avatar_cache(user)
    await store.invalidate_conversation(conversation)
    assert await store.for_turn(user, conversation) == (None, None)
    # A re-created avatar (new id, version 1 again) replaces the old one.
    await store.put_avatar(snapshot(user, avatar, 7))
    new_avatar = uuid.uuid4()
    await store.put_avatar(snapshot(user, new_avatar, 1))
    cached, _ = await store.for_turn(user, conversation)
    assert cached is not None and cached.id == new_avatar


async def test_a_slower_older_entry_never_replaces_a_newer_one() -> None:
    store: Store = SessionStore(max_avatars=10, max_conversations=10)
    user, avatar, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await store.put_avatar(snapshot(user, avatar, 5))
    await store.put_avatar(snapshot(user, avatar, 4))
    await store.put_window(window(conversation, 6, revision=1))
    await store.put_window(window(conversation, 8, revision=0))  # older revision
    await store.put_window(window(conversation, 4, revision=1))  # older seq
    cached_avatar, cached_window = await store.for_turn(user, conversation)
    assert cached_avatar is not None and cached_avatar.version == 5
    assert cached_window is not None and (cached_window.revision, cached_window.last_seq) == (1, 6)


async def test_many_concurrent_writers_leave_the_newest() -> None:
    store: Store = SessionStore(max_avatars=100, max_conversations=100)
    users = [(uuid.uuid4(), uuid.uuid4()) for _ in range(20)]
    newest: dict[uuid.UUID, int] = {}

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            user, avatar = rng.choice(users)
            version = rng.randint(1, 50)
            await asyncio.sleep(0)
            await store.put_avatar(snapshot(user, avatar, version))
            newest[user] = max(newest.get(user, 0), version)
            cached, _ = await store.for_turn(user, uuid.uuid4())
            # What a turn is handed is never older than what this task just stored.
            assert cached is not None and cached.version >= version

    await asyncio.gather(*(writer(seed) for seed in range(50)))
    for user, _ in users:
        cached, _ = await store.for_turn(user, uuid.uuid4())
        assert cached is not None and cached.version == newest[user]


async def test_both_maps_are_lru_bounded() -> None:
    store: Store = SessionStore(max_avatars=2, max_conversations=3)
    conversations = [uuid.uuid4() for _ in range(5)]
    users = [uuid.uuid4() for _ in range(4)]
    for cid in conversations:
        await store.put_window(window(cid, 2))
    for user in users:
        await store.put_avatar(snapshot(user, uuid.uuid4(), 1))
    await store.for_turn(users[2], conversations[2])  # used: now the most recent
    await store.put_avatar(snapshot(uuid.uuid4(), uuid.uuid4(), 1))
    await store.put_window(window(uuid.uuid4(), 2))
    assert len(store) == 5
    assert (await store.for_turn(users[0], conversations[0])) == (None, None)  # evicted first
    avatar, cached_window = await store.for_turn(users[2], conversations[2])
    assert avatar is not None and cached_window is not None  # kept: recently used
