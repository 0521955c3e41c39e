"""Chat turns in-process: replies, persona freshness, idempotency, SSE, titles after commit."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from avatar_chat.state import AppState
from tests.support.assertions import assert_error
from tests.support.factories import User, avatar_snapshot, create_avatar, create_conversation, history, send
from tests.support.sse import parse_sse


async def test_send_answers_with_both_saved_messages(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user, name="Nova", personality="playful")
    conversation = await create_conversation(app_client, user, mode="companion")
    response = await send(app_client, user, conversation["id"], "What should I cook tonight?")
    assert response.status_code == 201, response.text
    exchange = response.json()
    sent, reply = exchange["user_message"], exchange["assistant_message"]
    assert (sent["seq"], sent["role"], sent["status"]) == (1, "user", "complete")
    assert (reply["seq"], reply["role"], reply["status"]) == (2, "assistant", "complete")
    assert (reply["persona_version"], reply["personality"]) == (1, "playful")
    assert "Nova" in reply["content"] and "playful" in reply["content"] and "companion" in reply["content"]
    assert await history(app_client, user, conversation["id"]) == [sent, reply]


async def test_send_without_avatar_is_409_and_saves_nothing(
    app_client: httpx.AsyncClient, user: User
) -> None:
    conversation = await create_conversation(app_client, user)
    assert_error(await send(app_client, user, conversation["id"], "hello?"), 409, "avatar_required")
    assert await history(app_client, user, conversation["id"]) == []


async def test_bad_sends_are_4xx(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    url = f"/conversations/{conversation['id']}/messages"
    for body in (
        {},
        {"content": ""},
        {"content": "x" * 8001},
        {"content": 5},
        {"content": "a", "role": "assistant"},
    ):
        assert_error(await app_client.post(url, json=body, headers=user.headers), 422, "validation_failed")
    assert_error(
        await app_client.post(
            "/conversations/not-a-uuid/messages", json={"content": "a"}, headers=user.headers
        ),
        422,
        "validation_failed",
    )
    long_key = {**user.headers, "Idempotency-Key": "k" * 201}
    assert_error(
        await app_client.post(url, json={"content": "a"}, headers=long_key), 422, "validation_failed"
    )
    assert await history(app_client, user, conversation["id"]) == []


async def test_persona_switch_and_dashboard_edit_show_in_the_next_reply(
    app_client: httpx.AsyncClient, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    first = (await send(app_client, user, conversation["id"], "one")).json()["assistant_message"]
    assert (first["persona_version"], first["personality"]) == (1, "friendly")

    patched = await app_client.patch(
        "/avatars/me/persona", json={"personality": "witty"}, headers=user.headers
    )
    assert patched.status_code == 200
    second = (await send(app_client, user, conversation["id"], "two")).json()["assistant_message"]
    assert (second["persona_version"], second["personality"]) == (2, "witty")

    # The dashboard: no API call, no NOTIFY needed for correctness.
    await owner.execute(
        "update public.avatars set personality = 'caring', name = 'Sage' where user_id = $1", user.id
    )
    third = (await send(app_client, user, conversation["id"], "three")).json()["assistant_message"]
    assert (third["persona_version"], third["personality"]) == (3, "caring")
    assert "Sage" in third["content"]


async def test_mode_switch_and_rename_apply_to_the_next_turn(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user, mode="assistant")
    first = (await send(app_client, user, conversation["id"], "one")).json()["assistant_message"]
    assert "assistant mode" in first["content"]
    url = f"/conversations/{conversation['id']}"
    await app_client.patch(url, json={"mode": "companion", "title": "Evening chat"}, headers=user.headers)
    second = (await send(app_client, user, conversation["id"], "two")).json()["assistant_message"]
    assert "companion mode" in second["content"]
    assert (await app_client.get(url, headers=user.headers)).json()["title"] == "Evening chat"


async def test_idempotent_send_sequential_replay(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    first = await send(app_client, user, conversation["id"], "only once", key="key-1")
    again = await send(app_client, user, conversation["id"], "only once", key="key-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(await history(app_client, user, conversation["id"])) == 2
    reused = await send(app_client, user, conversation["id"], "something else", key="key-1")
    assert_error(reused, 422, "idempotency_key_reused")
    # The same key in another conversation is another send.
    other = await create_conversation(app_client, user)
    assert (await send(app_client, user, other["id"], "only once", key="key-1")).status_code == 201


async def test_idempotent_send_concurrent_creates_one_exchange(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    responses = await asyncio.gather(
        *(send(app_client, user, conversation["id"], "tap tap", key="same") for _ in range(10))
    )
    assert {r.status_code for r in responses} <= {201, 409}
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "send_in_progress"
            assert r.headers["Retry-After"]
    done = [r.json() for r in responses if r.status_code == 201]
    assert done
    assert all(d == done[0] for d in done)
    messages = await history(app_client, user, conversation["id"])
    assert [m["role"] for m in messages] == ["user", "assistant"]


async def test_sse_stream_events_in_order(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user, name="Echo")
    conversation = await create_conversation(app_client, user)
    response = await app_client.post(
        f"/conversations/{conversation['id']}/messages",
        json={"content": "stream please"},
        headers={**user.headers, "Accept": "text/event-stream"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[:2] == ["user_message", "assistant_message"] and names[-1] == "done"
    assert set(names[2:-1]) == {"delta"} and len(names) >= 6
    assert events[1][1]["status"] == "streaming" and events[1][1]["seq"] == 2  # to resume or stop it
    streamed = "".join(data["content"] for name, data in events if name == "delta")
    done = events[-1][1]
    assert done["content"] == streamed and done["status"] == "complete"
    assert events[0][1]["seq"] == 1 and done["seq"] == 2 and done["id"] == events[1][1]["id"]


async def test_errors_before_streaming_are_plain_json(app_client: httpx.AsyncClient, user: User) -> None:
    conversation = await create_conversation(app_client, user)  # no avatar
    response = await app_client.post(
        f"/conversations/{conversation['id']}/messages",
        json={"content": "hi"},
        headers={**user.headers, "Accept": "text/event-stream"},
    )
    assert_error(response, 409, "avatar_required")


async def test_the_first_message_names_the_conversation_in_the_same_transaction(
    app_client: httpx.AsyncClient, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    url = f"/conversations/{conversation['id']}"
    await send(app_client, user, conversation["id"], "Plan a weekend  hiking\ttrip in the Alps please")
    # Set by the statement that saved the message: there when the send is answered.
    assert (await app_client.get(url, headers=user.headers)).json()[
        "title"
    ] == "Plan a weekend hiking trip in"
    await send(app_client, user, conversation["id"], "Something else entirely")
    assert (await app_client.get(url, headers=user.headers)).json()[
        "title"
    ] == "Plan a weekend hiking trip in"
    # A user-given title is never overwritten.
    named = await create_conversation(app_client, user, title="Mine")
    await send(app_client, user, named["id"], "hello there")
    assert (await app_client.get(f"/conversations/{named['id']}", headers=user.headers)).json()[
        "title"
    ] == "Mine"
    # Long words are cut at 60 characters; blank text names nothing in particular.
    titles = await owner.fetch(
        "select c.title from public.conversations c where c.user_id = $1 order by c.created_at", user.id
    )
    assert [t["title"] for t in titles] == ["Plan a weekend hiking trip in", "Mine"]
    long = await create_conversation(app_client, user)
    await send(app_client, user, long["id"], "x" * 70 + " tail")
    title = (await app_client.get(f"/conversations/{long['id']}", headers=user.headers)).json()["title"]
    assert title == "x" * 59 + "…"


async def test_a_stale_cache_entry_is_never_used_even_if_notify_is_missed(
    app_client: httpx.AsyncClient, app_state: AppState, user: User, owner: asyncpg.Connection
) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    await send(app_client, user, conversation["id"], "warm the cache")
    row = await owner.fetchrow(
        "update public.avatars set personality = 'professional' where user_id = $1 returning id, version",
        user.id,
    )
    assert row is not None
    await asyncio.sleep(0.2)  # let the notification arrive and evict...
    # ...then put the old persona back, as if the notification had been lost.
    await app_state.store.put_avatar(
        avatar_snapshot(id=row["id"], user_id=user.id, personality="friendly", version=1)
    )
    reply = (await send(app_client, user, conversation["id"], "which persona?")).json()["assistant_message"]
    assert (reply["persona_version"], reply["personality"]) == (2, "professional")


async def test_sse_replay_of_a_completed_send(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    original = (await send(app_client, user, conversation["id"], "replay me", key="k-sse")).json()
    response = await app_client.post(
        f"/conversations/{conversation['id']}/messages",
        json={"content": "replay me"},
        headers={**user.headers, "Accept": "text/event-stream", "Idempotency-Key": "k-sse"},
    )
    assert response.headers["Idempotent-Replayed"] == "true"
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["user_message", "delta", "done"]
    assert events[0][1] == original["user_message"]
    assert events[2][1] == original["assistant_message"]
    assert events[1][1]["content"] == original["assistant_message"]["content"]


async def test_a_client_that_leaves_right_after_sending_still_gets_its_reply_saved(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user)
    for delay in (0.0, 0.001, 0.003, 0.006, 0.01, 0.02):
        conversation = await create_conversation(app_client, user)
        request = asyncio.create_task(send(app_client, user, conversation["id"], "bye"))
        await asyncio.sleep(delay)
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
        for _ in range(100):
            messages = await history(app_client, user, conversation["id"])
            if not any(m["status"] == "streaming" for m in messages):
                break
            await asyncio.sleep(0.02)
        # Either the send never happened, or it happened whole: never a message whose
        # reply nobody generates.
        assert [(m["role"], m["status"]) for m in messages] in (
            [],
            [("user", "complete"), ("assistant", "complete")],
        )
