"""Stop, resume, regenerate, edit and delete, with two real servers on one database.

Server A generates slowly (the offline provider with a pause between chunks); server B is
"another worker" (another machine, even): it resumes, stops and regenerates replies that
A is generating, through nothing but the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.assertions import assert_error
from tests.support.factories import User, create_chat, history
from tests.support.servers import ServerProcess, server_pair
from tests.support.sse import sse_records

pytestmark = pytest.mark.slow

SLOW = {
    # About 12 chunks: a reply takes 1.5 s or so, more than a stop takes to reach the worker
    # generating it from another one (its next demand poll, CHAT_DEMAND_POLL_MS 500) even on
    # a loaded machine.
    "OFFLINE_LLM_CHUNK_DELAY_MS": "120",
    "CHAT_PARTIAL_SAVE_MS": "50",
    "CHAT_STREAM_POLL_MS": "30",
}
# The offline reply repeats what it was told (up to 80 characters): a long message, a long reply.
LONG = "tell me everything about the sea, the ships, the storms and the lighthouses, slowly"

Event = tuple[str, Any, str | None]


@pytest.fixture(scope="module")
async def servers(database_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with server_pair(database_url, SLOW) as pair:
        yield pair


Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]  # of server A, of server B


@pytest.fixture
async def clients(servers: tuple[ServerProcess, ServerProcess]) -> AsyncIterator[Clients]:
    a, b = servers
    async with a.client() as ca, b.client() as cb:
        yield ca, cb


@pytest.fixture
async def conversation_id(clients: Clients, user: User) -> str:
    """The user's conversation with their avatar Maris, made through server A."""
    return await create_chat(clients[0], user, name="Maris")


async def _events(response: httpx.Response, *, until_deltas: int | None = None) -> list[Event]:
    events: list[Event] = []
    async for event in sse_records(response):
        events.append(event)
        if until_deltas is not None and sum(1 for e in events if e[0] == "delta") >= until_deltas:
            break
    return events


def _text(events: list[Event]) -> str:
    return "".join(data["content"] for name, data, _ in events if name == "delta")


async def _start_streaming(
    client: httpx.AsyncClient, user: User, conversation_id: str, content: str, *, deltas: int, key: str
) -> list[Event]:
    """Send with SSE, read `deltas` chunks, then go away (the reply goes on being generated)."""
    headers = {**user.headers, "Accept": "text/event-stream", "Idempotency-Key": key}
    async with client.stream(
        "POST", f"/conversations/{conversation_id}/messages", json={"content": content}, headers=headers
    ) as response:
        assert response.status_code == 201
        return await _events(response, until_deltas=deltas)


async def _follow(
    client: httpx.AsyncClient, user: User, conversation_id: str, reply_id: str, last_event_id: str | None
) -> list[Event]:
    headers = {**user.headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with client.stream(
        "GET", f"/conversations/{conversation_id}/messages/{reply_id}/stream", headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        return await _events(response)


async def test_resume_on_another_worker_from_last_event_id(
    clients: Clients, user: User, conversation_id: str
) -> None:
    a, b = clients
    first = await _start_streaming(a, user, conversation_id, LONG, deltas=3, key="resume-1")
    assert [name for name, _, _ in first[:2]] == ["user_message", "assistant_message"]
    reply_id = first[1][1]["id"]
    seen, last_id = _text(first), first[-1][2]
    assert last_id is not None and last_id.startswith("1:") and int(last_id[2:]) == len(seen)

    rest = await _follow(b, user, conversation_id, reply_id, last_id)  # while A still generates
    assert rest[-1][0] == "done"
    done = rest[-1][1]
    assert done["status"] == "complete" and done["id"] == reply_id
    assert _text(rest), "some of the reply was still being generated when B picked it up"
    # Not one character duplicated or missing across the two workers.
    assert seen + _text(rest) == done["content"]
    ids = [event_id for name, _, event_id in rest if name == "delta" and event_id is not None]
    assert [int(i.split(":")[1]) for i in ids] == sorted({int(i.split(":")[1]) for i in ids})

    whole = await _follow(b, user, conversation_id, reply_id, None)  # a finished reply: whole, then done
    assert [name for name, _, _ in whole] == ["delta", "done"]
    assert _text(whole) == done["content"] and whole[-1][1] == done
    tail = await _follow(a, user, conversation_id, reply_id, f"1:{len(done['content']) - 5}")
    assert _text(tail) == done["content"][-5:]


async def test_stop_from_another_worker(clients: Clients, user: User, conversation_id: str) -> None:
    a, b = clients
    headers = {**user.headers, "Accept": "text/event-stream"}
    async with a.stream(
        "POST", f"/conversations/{conversation_id}/messages", json={"content": LONG}, headers=headers
    ) as response:
        events: list[Event] = []
        async for event in sse_records(response):
            events.append(event)
            if sum(1 for e in events if e[0] == "delta") == 2:
                reply_id = events[1][1]["id"]
                stopped = await b.post(
                    f"/conversations/{conversation_id}/messages/{reply_id}/stop", headers=user.headers
                )
    assert stopped.status_code == 200, stopped.text
    reply = stopped.json()
    assert reply["status"] == "stopped" and reply["id"] == reply_id
    # A stopped at its next chunk and saved what it had: what its client was sent.
    assert events[-1][0] == "done" and events[-1][1] == reply
    assert reply["content"] == _text(events) and 0 < len(reply["content"]) < 200
    assert (await history(b, user, conversation_id))[-1] == reply
    again = await a.post(f"/conversations/{conversation_id}/messages/{reply_id}/stop", headers=user.headers)
    assert again.status_code == 200 and again.json() == reply  # a settled reply: a no-op
    # The stopped reply is part of the conversation: the next turn works and follows it.
    sent = await b.post(
        f"/conversations/{conversation_id}/messages", json={"content": "go on"}, headers=user.headers
    )
    assert sent.status_code == 201 and sent.json()["user_message"]["seq"] == reply["seq"] + 1


async def test_two_regenerations_with_one_key_make_one_alternative(
    clients: Clients, user: User, conversation_id: str
) -> None:
    a, b = clients
    sent = await a.post(
        f"/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=user.headers
    )
    original = sent.json()["assistant_message"]
    url = f"/conversations/{conversation_id}/messages/{original['id']}/regenerate"
    headers = {**user.headers, "Idempotency-Key": "regen-1"}

    async def regenerate(client: httpx.AsyncClient) -> dict[str, Any]:
        for _ in range(200):
            response = await client.post(url, headers=headers)
            if response.status_code == 201:
                data: dict[str, Any] = response.json()
                return data
            assert_error(response, 409, "send_in_progress")
            await asyncio.sleep(0.05)
        raise AssertionError("the regeneration never completed")

    first, second = await asyncio.gather(regenerate(a), regenerate(b))
    assert first == second  # one alternative, answered to both
    alternative = first["assistant_message"]
    assert alternative["id"] != original["id"] and alternative["variant"] == 1
    assert alternative["reply_to"] == original["reply_to"] and alternative["seq"] > original["seq"]
    variants = (
        await b.get(
            f"/conversations/{conversation_id}/messages/{original['id']}/variants", headers=user.headers
        )
    ).json()
    assert [v["variant"] for v in variants["items"]] == [0, 1]
    assert variants["current_id"] == alternative["id"]
    shown = await history(a, user, conversation_id)
    assert [m["id"] for m in shown] == [first["user_message"]["id"], alternative["id"]]


async def test_regenerate_and_edit_only_the_latest_exchange(
    clients: Clients, user: User, conversation_id: str
) -> None:
    a, b = clients
    base = f"/conversations/{conversation_id}/messages"
    one = (await a.post(base, json={"content": "first"}, headers=user.headers)).json()
    two = (await a.post(base, json={"content": "second"}, headers=user.headers)).json()
    assert_error(
        await b.post(f"{base}/{one['assistant_message']['id']}/regenerate", headers=user.headers),
        409,
        "not_latest",
    )
    assert_error(
        await b.patch(f"{base}/{one['user_message']['id']}", json={"content": "x"}, headers=user.headers),
        409,
        "not_latest",
    )
    assert_error(
        await b.post(f"{base}/{two['user_message']['id']}/regenerate", headers=user.headers),
        422,
        "not_editable",
    )
    assert_error(
        await b.patch(
            f"{base}/{two['assistant_message']['id']}", json={"content": "x"}, headers=user.headers
        ),
        422,
        "not_editable",
    )
    edited = await b.patch(
        f"{base}/{two['user_message']['id']}", json={"content": "second, edited"}, headers=user.headers
    )
    assert edited.status_code == 201, edited.text
    exchange = edited.json()
    assert exchange["user_message"]["id"] == two["user_message"]["id"]
    assert exchange["user_message"]["content"] == "second, edited"
    assert "second, edited" in exchange["assistant_message"]["content"]
    assert exchange["assistant_message"]["variant"] == 1
    shown = await history(a, user, conversation_id)
    assert [m["content"] for m in shown if m["role"] == "user"] == ["first", "second, edited"]
    assert shown[-1]["id"] == exchange["assistant_message"]["id"]


async def test_delete_keeps_seq_unique_and_never_reused(
    clients: Clients, user: User, conversation_id: str
) -> None:
    a, b = clients
    base = f"/conversations/{conversation_id}/messages"
    one = (await a.post(base, json={"content": "keep"}, headers=user.headers)).json()
    two = (await a.post(base, json={"content": "drop"}, headers=user.headers)).json()
    deleted = await b.delete(f"{base}/{two['user_message']['id']}", headers=user.headers)
    assert deleted.status_code == 204
    assert_error(
        await b.delete(f"{base}/{two['user_message']['id']}", headers=user.headers), 404, "message_not_found"
    )
    three = (await a.post(base, json={"content": "after"}, headers=user.headers)).json()
    assert three["user_message"]["seq"] == two["assistant_message"]["seq"] + 1  # 3 and 4 are gone for good
    shown = await history(b, user, conversation_id)
    assert [m["seq"] for m in shown] == [1, 2, 5, 6]
    assert [m["content"] for m in shown if m["role"] == "user"] == ["keep", "after"]
    # Deleting the current alternative makes the previous one current again.
    regenerated = (
        await a.post(f"{base}/{three['assistant_message']['id']}/regenerate", headers=user.headers)
    ).json()
    assert (
        await b.delete(f"{base}/{regenerated['assistant_message']['id']}", headers=user.headers)
    ).status_code == 204
    assert (await history(b, user, conversation_id))[-1]["id"] == three["assistant_message"]["id"]
    assert one["user_message"]["seq"] == 1


async def test_bad_requests_on_controls(
    clients: Clients, user: User, conversation_id: str, other_user: User
) -> None:
    a, _ = clients
    sent = (
        await a.post(
            f"/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=user.headers
        )
    ).json()
    reply = sent["assistant_message"]["id"]
    base = f"/conversations/{conversation_id}/messages"
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(await a.post(f"{base}/{missing}/stop", headers=user.headers), 404, "message_not_found")
    assert_error(await a.get(f"{base}/{missing}/stream", headers=user.headers), 404, "message_not_found")
    assert_error(
        await a.get(f"{base}/{reply}/stream", headers={**user.headers, "Last-Event-ID": "nonsense"}),
        400,
        "invalid_event_id",
    )
    for response in (
        await a.post(f"{base}/{reply}/stop", headers=other_user.headers),
        await a.get(f"{base}/{reply}/stream", headers=other_user.headers),
        await a.post(f"{base}/{reply}/regenerate", headers=other_user.headers),
        await a.delete(f"{base}/{reply}", headers=other_user.headers),
    ):
        assert response.status_code == 404, response.text  # someone else's reply does not exist for you
    assert (await a.get(f"{base}/not-a-uuid/stream", headers=user.headers)).status_code == 422
