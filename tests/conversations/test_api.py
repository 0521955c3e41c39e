"""Conversations: create, list (paginated), read, switch mode, rename, delete, history."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.assertions import assert_error
from tests.support.factories import User, create_avatar, create_conversation, history, send


async def test_create_read_update_delete(app_client: httpx.AsyncClient, user: User) -> None:
    created = await create_conversation(app_client, user, mode="companion", title="  Trip plans ")
    assert (created["mode"], created["title"], created["last_seq"]) == ("companion", "Trip plans", 0)
    url = f"/conversations/{created['id']}"
    assert (await app_client.get(url, headers=user.headers)).json() == created

    updated = await app_client.patch(
        url, json={"mode": "assistant", "title": "Renamed"}, headers=user.headers
    )
    assert updated.status_code == 200
    assert (updated.json()["mode"], updated.json()["title"]) == ("assistant", "Renamed")
    cleared = await app_client.patch(url, json={"title": None}, headers=user.headers)
    assert cleared.json()["title"] is None

    for bad in ({}, {"mode": "robot"}, {"mode": None}, {"title": "x" * 201}, {"extra": 1}):
        assert_error(await app_client.patch(url, json=bad, headers=user.headers), 422, "validation_failed")

    assert (await app_client.delete(url, headers=user.headers)).status_code == 204
    assert_error(await app_client.get(url, headers=user.headers), 404, "conversation_not_found")
    assert_error(await app_client.delete(url, headers=user.headers), 404, "conversation_not_found")


async def test_list_is_newest_first_and_paginates_without_gaps(
    app_client: httpx.AsyncClient, user: User
) -> None:
    ids = [(await create_conversation(app_client, user))["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await app_client.get("/conversations", params=params, headers=user.headers)).json()
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert_error(
        await app_client.get("/conversations", params={"cursor": "@@@"}, headers=user.headers),
        400,
        "invalid_cursor",
    )
    assert_error(
        await app_client.get("/conversations", params={"limit": 101}, headers=user.headers),
        422,
        "validation_failed",
    )


async def test_someone_elses_conversation_is_404_on_every_route(
    app_client: httpx.AsyncClient, user: User, other_user: User
) -> None:
    await create_avatar(app_client, user)
    await create_avatar(app_client, other_user)
    theirs = await create_conversation(app_client, user)
    assert (await send(app_client, user, theirs["id"], "private")).status_code == 201
    url = f"/conversations/{theirs['id']}"
    h = other_user.headers
    assert_error(await app_client.get(url, headers=h), 404, "conversation_not_found")
    assert_error(
        await app_client.patch(url, json={"title": "mine now"}, headers=h), 404, "conversation_not_found"
    )
    assert_error(await app_client.delete(url, headers=h), 404, "conversation_not_found")
    assert_error(await app_client.get(url + "/messages", headers=h), 404, "conversation_not_found")
    assert_error(await send(app_client, other_user, theirs["id"], "hi"), 404, "conversation_not_found")
    listed = (await app_client.get("/conversations", headers=h)).json()["items"]
    assert theirs["id"] not in [c["id"] for c in listed]
    # ...and nothing of theirs changed.
    assert next(m["content"] for m in await history(app_client, user, theirs["id"])) == "private"


def _as_seen_by_client(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """An answer without what differs between any two answers: the request id (in the body
    and the X-Request-ID header) and the Date header."""
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "date")}
    body = response.json()
    body["error"].pop("request_id")
    return response.status_code, headers, body


async def test_someone_elses_ids_answer_as_ids_that_do_not_exist(
    app_client: httpx.AsyncClient, user: User, other_user: User
) -> None:
    """On every route, another user's conversation or message is answered exactly as an id
    that does not exist: same status, headers and body but for the request id. Their
    exchange is in this worker's cache, and the caller has a conversation and messages
    of their own."""
    await create_avatar(app_client, user)
    await create_avatar(app_client, other_user)
    theirs = await create_conversation(app_client, user)
    their_turn = await send(app_client, user, theirs["id"], "private")
    assert their_turn.status_code == 201, their_turn.text
    their_message = their_turn.json()["user_message"]["id"]
    their_reply = their_turn.json()["assistant_message"]["id"]
    their_history = await history(app_client, user, theirs["id"])
    mine = await create_conversation(app_client, other_user)
    assert (await send(app_client, other_user, mine["id"], "mine")).status_code == 201
    h = other_user.headers
    sse = {**h, "Accept": "text/event-stream"}
    keyed = {**h, "Idempotency-Key": "same-key"}

    def conversation_requests(c: str) -> list[tuple[str, str, dict[str, str], dict[str, Any] | None]]:
        return [
            ("GET", f"/conversations/{c}", h, None),
            ("PATCH", f"/conversations/{c}", h, {"title": "mine now"}),
            ("DELETE", f"/conversations/{c}", h, None),
            ("GET", f"/conversations/{c}/messages", h, None),
            ("POST", f"/conversations/{c}/messages", h, {"content": "hi"}),
            ("POST", f"/conversations/{c}/messages", keyed, {"content": "hi"}),
            ("POST", f"/conversations/{c}/messages", sse, {"content": "hi"}),
        ]

    def message_requests(
        c: str, m: str, r: str
    ) -> list[tuple[str, str, dict[str, str], dict[str, Any] | None]]:
        return [
            ("POST", f"/conversations/{c}/messages/{r}/regenerate", h, None),
            ("PATCH", f"/conversations/{c}/messages/{m}", h, {"content": "edited"}),
            ("DELETE", f"/conversations/{c}/messages/{r}", h, None),
            ("POST", f"/conversations/{c}/messages/{r}/stop", h, None),
            ("GET", f"/conversations/{c}/messages/{r}/stream", h, None),
            ("GET", f"/conversations/{c}/messages/{m}/variants", h, None),
        ]

    nowhere, nothing, no_reply = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    pairs = [
        *zip(conversation_requests(theirs["id"]), conversation_requests(nowhere), strict=True),
        *zip(
            message_requests(theirs["id"], their_message, their_reply),
            message_requests(nowhere, nothing, no_reply),
            strict=True,
        ),
        # Their message named under a conversation of one's own.
        *zip(
            message_requests(mine["id"], their_message, their_reply),
            message_requests(mine["id"], nothing, no_reply),
            strict=True,
        ),
    ]
    for (method, url, headers, body), (_, missing_url, _, _) in pairs:
        real = await app_client.request(method, url, headers=headers, json=body)
        missing = await app_client.request(method, missing_url, headers=headers, json=body)
        assert real.status_code == 404, (method, url, real.text)
        assert _as_seen_by_client(real) == _as_seen_by_client(missing), (method, url)
    # ...and nothing of theirs changed.
    assert await history(app_client, user, theirs["id"]) == their_history


async def test_history_pages_forward_and_backward(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    conversation = await create_conversation(app_client, user)
    for i in range(5):
        assert (await send(app_client, user, conversation["id"], f"m{i}")).status_code == 201
    url = f"/conversations/{conversation['id']}/messages"
    first = (await app_client.get(url, params={"limit": 4}, headers=user.headers)).json()
    assert [m["seq"] for m in first["items"]] == [1, 2, 3, 4]
    assert first["has_more"] is True
    latest = (await app_client.get(url, params={"before": 11, "limit": 4}, headers=user.headers)).json()
    assert [m["seq"] for m in latest["items"]] == [7, 8, 9, 10]
    assert latest["has_more"] is True
    oldest = (await app_client.get(url, params={"before": 3, "limit": 4}, headers=user.headers)).json()
    assert ([m["seq"] for m in oldest["items"]], oldest["has_more"]) == ([1, 2], False)
    # Both: the gap between two pages a client holds, oldest first.
    gap = (
        await app_client.get(url, params={"after": 2, "before": 9, "limit": 4}, headers=user.headers)
    ).json()
    assert ([m["seq"] for m in gap["items"]], gap["has_more"]) == ([3, 4, 5, 6], True)
    rest = (
        await app_client.get(url, params={"after": 6, "before": 9, "limit": 4}, headers=user.headers)
    ).json()
    assert ([m["seq"] for m in rest["items"]], rest["has_more"]) == ([7, 8], False)
    empty = (await app_client.get(url, params={"after": 5, "before": 3}, headers=user.headers)).json()
    assert empty == {"items": [], "has_more": False}
    assert len(await history(app_client, user, conversation["id"])) == 10


async def test_empty_history_of_an_existing_conversation(app_client: httpx.AsyncClient, user: User) -> None:
    conversation = await create_conversation(app_client, user)
    page = (
        await app_client.get(f"/conversations/{conversation['id']}/messages", headers=user.headers)
    ).json()
    assert page == {"items": [], "has_more": False}
