"""DELETE /me on Supabase: the user's Storage objects, then the user through Auth's admin
API (DELETE /auth/v1/admin/users/<id> with the service-role key), with respx answering
Storage and Auth as they do (tests/fakes/supabase.py). The fake Auth deletes the
auth.users row as GoTrue does, and the foreign keys cascade. The embedded default:
tests/accounts/test_account_deletion.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from avatar_chat.core.settings import Settings
from tests.fakes.supabase import OnSupabase, Recorded, on_supabase
from tests.support.assertions import assert_error
from tests.support.databases import USER_TABLES, user_rows
from tests.support.factories import User, create_conversation, send
from tests.support.images import image_bytes

_LIST_BODY = {"limit": 1000, "offset": 0, "sortBy": {"column": "name", "order": "asc"}}


@pytest.fixture
async def supabase(settings: Settings, owner: asyncpg.Connection) -> AsyncIterator[OnSupabase]:
    async with on_supabase(settings, owner) as running:
        yield running


@pytest.fixture
def me(supabase: OnSupabase, user: User) -> User:
    return supabase.signed_in(user)


@pytest.fixture
def them(supabase: OnSupabase, other_user: User) -> User:
    return supabase.signed_in(other_user)


def _removed(requests: list[Recorded]) -> list[str]:
    return sorted(p for r in requests if r.operation == "remove" for p in r.body["prefixes"])


async def test_delete_me_removes_every_object_then_the_auth_user_and_the_token_stops_working(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User, them: User
) -> None:
    client, fake = supabase.client, supabase.fake
    folder = (await supabase.with_image(me))["image_path"]
    conversation = (await create_conversation(client, me))["id"]
    assert (await send(client, me, conversation, "remember me")).status_code == 201
    theirs = (await supabase.with_image(them))["image_path"]
    # Objects the avatar no longer points at (a cleanup that failed), at several depths.
    left_behind = [
        f"{me.id}/{uuid.uuid4().hex}/512.webp",
        f"{me.id}/old/deeper/128.webp",
        f"{me.id}/loose.webp",
    ]
    for name in left_behind:
        fake.put_object(name)
    mine = sorted([f"{folder}/512.webp", f"{folder}/128.webp", *left_behind])
    assert fake.names(f"{me.id}/") == mine
    others_before = await user_rows(owner, them)
    objects_at_delete: list[list[str]] = []

    async def on_delete_user(_: Recorded) -> None:
        objects_at_delete.append(fake.names(f"{me.id}/"))

    fake.hooks["delete_user"] = on_delete_user
    seen = len(fake.requests)
    response = await client.delete("/me", headers=me.headers)
    assert response.status_code == 204, response.text
    requests = fake.requests[seen:]
    # The user is deleted between two sweeps of their folder; the second is looked at below.
    (delete_user,) = [r for r in requests if r.operation == "delete_user"]
    at = requests.index(delete_user)
    requests, sweep = requests[: at + 1], requests[at + 1 :]

    # Storage: the user's folder and each folder under it, listed with the service role...
    lists = [r for r in requests if r.operation == "list"]
    assert lists[0].body == {**_LIST_BODY, "prefix": str(me.id)}
    assert sorted(r.body["prefix"] for r in lists) == sorted(
        [str(me.id), folder, left_behind[0].rsplit("/", 1)[0], f"{me.id}/old", f"{me.id}/old/deeper"]
    )
    for r in lists:
        assert (r.method, r.path, r.status) == ("POST", "/storage/v1/object/list/avatars", 200)
        assert {k: v for k, v in r.body.items() if k != "prefix"} == _LIST_BODY
        supabase.assert_service_role(r)
    # ... every object removed, nobody else's ...
    assert _removed(requests) == mine
    for r in requests:
        if r.operation == "remove":
            assert (r.method, r.path, r.status) == ("DELETE", "/storage/v1/object/avatars", 200)
            supabase.assert_service_role(r)
    assert fake.names(f"{me.id}/") == []
    assert fake.names(f"{them.id}/") == sorted([f"{theirs}/512.webp", f"{theirs}/128.webp"])
    # ... and only then the user, through Auth's admin API with the service-role key; then
    # the folder is listed once more (nothing left: nothing to remove).
    assert requests[-1] is delete_user
    assert [(r.operation, r.body["prefix"], r.answer) for r in sweep] == [("list", str(me.id), [])]
    assert (delete_user.method, delete_user.path) == ("DELETE", f"/auth/v1/admin/users/{me.id}")
    supabase.assert_service_role(delete_user)
    assert delete_user.body == {"should_soft_delete": False}  # a hard delete: the row goes
    assert (delete_user.status, delete_user.answer) == (200, {})
    assert objects_at_delete == [[]]
    # Every list first, then every removal, then the user: nothing is deleted before it is found.
    phases = {"list": 0, "remove": 1, "delete_user": 2}
    assert [phases[str(r.operation)] for r in requests] == sorted(phases[str(r.operation)] for r in requests)

    # Auth's delete cascaded to everything of the user's; nobody else lost anything.
    assert set((await user_rows(owner, me)).values()) == {0}
    assert await user_rows(owner, them) == others_before
    # The token still verifies, but every route refuses it at once.
    for method, path, body in (
        ("GET", "/avatars/me", None),
        ("PATCH", "/avatars/me/persona", {"personality": "witty"}),
        ("POST", "/avatars/me", {"name": "Back"}),
        ("GET", "/avatars/me/image", None),
        ("DELETE", "/avatars/me/image", None),
        ("GET", "/conversations", None),
        ("POST", f"/conversations/{conversation}/messages", {"content": "hello?"}),
    ):
        response = await client.request(method, path, json=body, headers=me.headers)
        assert_error(response, 401, "user_not_found")
    response = await client.put("/avatars/me/image", content=image_bytes(), headers=me.headers)
    assert_error(response, 401, "user_not_found")
    await supabase.settle()
    assert fake.names(f"{me.id}/") == []  # what that PUT wrote was removed again

    # Repeating it (a client retrying after a lost answer): Auth answers 404 user_not_found.
    seen = len(fake.requests)
    response = await client.delete("/me", headers=me.headers)
    assert response.status_code == 204, response.text
    again = fake.requests[seen:]
    assert [r.operation for r in again] == ["list", "delete_user", "list"]
    assert again[0].answer == again[2].answer == []
    assert again[1].status == 404
    assert again[1].answer == {"code": "user_not_found", "message": "User not found"}
    assert (await client.get("/avatars/me", headers=them.headers)).status_code == 200


async def test_objects_of_an_upload_that_committed_during_the_deletion_are_removed_too(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    """An upload racing DELETE /me: its objects land after the first sweep listed the
    folder, and its row commits before the user goes (the cascade takes the row only)."""
    client, fake = supabase.client, supabase.fake
    await supabase.with_image(me)
    late = [f"{me.id}/{uuid.uuid4().hex}/512.webp", f"{me.id}/{uuid.uuid4().hex}/128.webp"]

    async def upload_lands(_: Recorded) -> None:
        for name in late:
            fake.put_object(name)

    fake.hooks["delete_user"] = upload_lands
    response = await client.delete("/me", headers=me.headers)
    assert response.status_code == 204, response.text
    assert fake.names(f"{me.id}/") == []
    (delete_user,) = fake.calls("delete_user")
    after = fake.requests[fake.requests.index(delete_user) + 1 :]
    assert _removed(after) == sorted(late)
    assert await user_rows(owner, me) == dict.fromkeys([*USER_TABLES, "auth.users"], 0)


async def test_many_objects_are_listed_page_by_page_and_removed_in_batches_storage_takes(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    fake = supabase.fake
    names = [*sorted(f"{me.id}/bulk/{i:05}.webp" for i in range(2345)), f"{me.id}/top.webp"]
    for name in names:
        fake.put_object(name)
    response = await supabase.client.delete("/me", headers=me.headers)
    assert response.status_code == 204, response.text
    lists = [r.body for r in fake.calls("list")]
    assert [(b["prefix"], b["offset"]) for b in lists] == [
        (str(me.id), 0),
        (f"{me.id}/bulk", 0),
        (f"{me.id}/bulk", 1000),
        (f"{me.id}/bulk", 2000),
        (str(me.id), 0),  # the sweep after the user went: nothing left
    ]
    removes = fake.calls("remove")
    assert all(r.status == 200 and len(r.body["prefixes"]) <= 1000 for r in removes)
    assert _removed(removes) == sorted(names)
    assert fake.names(f"{me.id}/") == []
    assert await user_rows(owner, me) == dict.fromkeys([*USER_TABLES, "auth.users"], 0)


@pytest.mark.parametrize("failure", ["status_500", "status_503", "connection_refused"])
async def test_auth_failing_is_503_and_the_user_stays_until_a_retry_completes(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User, failure: str
) -> None:
    client, fake = supabase.client, supabase.fake
    await supabase.with_image(me)
    before = await user_rows(owner, me)
    if failure == "connection_refused":
        fake.fail("delete_user", status=None)
    elif failure == "status_503":  # a gateway's answer: not JSON
        fake.fail("delete_user", status=503, body=b"<html>upstream unavailable</html>")
    else:
        fake.fail("delete_user", status=500)

    response = await client.delete("/me", headers=me.headers)
    assert_error(response, 503, "auth_unavailable")
    assert response.headers["retry-after"] == "1"
    assert len(fake.calls("delete_user")) == 1
    assert await user_rows(owner, me) == before  # the user and all their rows are still there
    assert fake.names(f"{me.id}/") == []  # the objects went first
    assert (await client.get("/avatars/me", headers=me.headers)).status_code == 200  # still signed in

    response = await client.delete("/me", headers=me.headers)
    assert response.status_code == 204, response.text
    assert fake.calls("delete_user")[-1].status == 200
    assert set((await user_rows(owner, me)).values()) == {0}
    assert_error(await client.get("/avatars/me", headers=me.headers), 401, "user_not_found")


@pytest.mark.parametrize(
    ("operation", "status"), [("remove", 500), ("remove", None), ("list", 500), ("list", None)]
)
async def test_storage_failing_is_503_and_the_auth_user_is_not_deleted(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User, operation: str, status: int | None
) -> None:
    client, fake = supabase.client, supabase.fake
    folder = (await supabase.with_image(me))["image_path"]
    before = await user_rows(owner, me)
    fake.fail("remove" if operation == "remove" else "list", status=status)

    response = await client.delete("/me", headers=me.headers)
    assert_error(response, 503, "storage_unavailable")
    assert response.headers["retry-after"] == "1"
    assert fake.calls("delete_user") == []  # nothing is lost: the user and their objects stay
    assert await user_rows(owner, me) == before
    assert fake.names(f"{me.id}/") == sorted([f"{folder}/512.webp", f"{folder}/128.webp"])
    image = await client.get("/avatars/me/image", headers=me.headers)
    assert image.status_code == 200, image.text

    response = await client.delete("/me", headers=me.headers)
    assert response.status_code == 204, response.text
    assert fake.names(f"{me.id}/") == []
    assert [r.status for r in fake.calls("delete_user")] == [200]
    assert set((await user_rows(owner, me)).values()) == {0}


async def test_auth_refusing_the_service_key_is_503_and_deletes_nothing(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    """A key Auth does not take as an admin's (403 not_admin) is not "already gone"."""

    async def not_admin(request: Recorded) -> httpx.Response:
        return supabase.fake.auth_error(request, 403, "not_admin", "User not allowed")

    supabase.fake.hooks["delete_user"] = not_admin
    response = await supabase.client.delete("/me", headers=me.headers)
    assert_error(response, 503, "auth_unavailable")
    assert supabase.fake.calls("delete_user")[0].headers["x-supabase-api-version"] == "2024-01-01"
    assert await owner.fetchval("select count(*) from auth.users where id = $1", me.id) == 1


async def test_a_404_that_is_not_user_not_found_does_not_count_as_deleted(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    supabase.fake.fail("delete_user", status=404, body=b'{"message":"no Route matched with those values"}')
    response = await supabase.client.delete("/me", headers=me.headers)
    assert await owner.fetchval("select count(*) from auth.users where id = $1", me.id) == 1
    assert_error(response, 503, "auth_unavailable")
