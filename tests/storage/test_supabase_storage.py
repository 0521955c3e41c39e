"""Avatar images on Supabase Storage: the real app with SUPABASE_URL and a service-role key,
and respx answering Storage's HTTP API as Storage does (tests/fakes/supabase.py). Every
request the backend makes is checked as Storage would see it; the embedded default's
local store is tests/avatars/test_images.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import asyncpg
import httpx
import jwt
import pytest
from PIL import Image

from avatar_chat.core.settings import Settings
from avatar_chat.storage.supabase import SupabaseObjectStore
from tests.fakes.supabase import SUPABASE_URL, OnSupabase, Recorded, on_supabase, wait_for
from tests.support.assertions import assert_error
from tests.support.factories import User, create_avatar
from tests.support.images import image_bytes

URL = "/avatars/me/image"
TTL_S = 900  # not the default (3600): the URLs must carry the configured lifetime
STORAGE = "/storage/v1/object"


@pytest.fixture
async def supabase(settings: Settings, owner: asyncpg.Connection) -> AsyncIterator[OnSupabase]:
    async with on_supabase(settings, owner, storage_signed_url_ttl_s=TTL_S) as running:
        assert isinstance(running.state.images, SupabaseObjectStore)
        yield running


@pytest.fixture
def me(supabase: OnSupabase, user: User) -> User:
    return supabase.signed_in(user)


async def _row(owner: asyncpg.Connection, user: User) -> tuple[str | None, int]:
    row = await owner.fetchrow("select image_path, version from public.avatars where user_id = $1", user.id)
    assert row is not None
    return row["image_path"], row["version"]


def _files(folder: str) -> list[str]:
    return [f"{folder}/512.webp", f"{folder}/128.webp"]


def _folder_of(upload: Recorded) -> str:
    return upload.object_name.rsplit("/", 1)[0]


def _assert_upload(supabase: OnSupabase, upload: Recorded, folder: str) -> None:
    """One rendition, as Storage received it: a new object, multipart, WebP of its size."""
    size = int(upload.object_name.rsplit("/", 1)[1].removesuffix(".webp"))
    assert upload.method == "POST"
    assert upload.path == f"{STORAGE}/avatars/{folder}/{size}.webp"
    supabase.assert_service_role(upload)
    assert upload.headers["x-upsert"] == "false"  # never overwrite: a new image gets new names
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert upload.fields == {"cacheControl": "31536000"}  # Storage stores max-age=31536000
    (part,) = upload.files
    assert (part.name, part.filename, part.content_type) == ("file", f"{size}.webp", "image/webp")
    with Image.open(io.BytesIO(part.data)) as picture:
        picture.load()
        assert picture.format == "WEBP" and picture.size == (size, size)
    assert upload.status == 200 and upload.answer["Key"] == f"avatars/{folder}/{size}.webp"


async def _put(client: httpx.AsyncClient, user: User, data: bytes, **headers: str) -> httpx.Response:
    return await client.put(URL, content=data, headers={**user.headers, **headers})


async def test_put_uploads_two_webp_objects_before_the_row_points_at_them_and_replaces_after(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    client, fake = supabase.client, supabase.fake
    avatar = await create_avatar(client, me)
    db = asyncio.Lock()  # both renditions upload at once; one owner connection
    at_upload: list[tuple[str | None, int]] = []
    at_remove: list[tuple[str | None, int]] = []

    async def on_upload(_: Recorded) -> None:
        async with db:
            at_upload.append(await _row(owner, me))

    async def on_remove(_: Recorded) -> None:
        async with db:
            at_remove.append(await _row(owner, me))

    fake.hooks["upload"] = on_upload
    fake.hooks["remove"] = on_remove

    response = await _put(client, me, image_bytes("JPEG", (640, 480)), **{"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    first = response.json()
    folder = first["image_path"]
    assert folder.startswith(f"{me.id}/") and len(folder.split("/")[1]) == 32
    assert first["version"] == avatar["version"] + 1 and response.headers["etag"] == f'"{first["version"]}"'
    uploads = fake.calls("upload")
    assert sorted(u.object_name for u in uploads) == sorted(_files(folder))
    for upload in uploads:
        _assert_upload(supabase, upload, folder)
    # The objects were written while the row still had no image.
    assert at_upload == [(None, avatar["version"])] * 2
    assert await _row(owner, me) == (folder, first["version"])
    stored = {name: fake.objects[name] for name in fake.names(str(me.id))}
    assert sorted(stored) == sorted(_files(folder))
    assert {(o.mimetype, o.cache_control) for o in stored.values()} == {("image/webp", "max-age=31536000")}
    await supabase.settle()
    assert fake.calls("remove") == []  # there was no previous image

    # A second image: a new folder, and the old one removed only once the row let go of it.
    at_upload.clear()
    response = await _put(client, me, image_bytes("PNG", (300, 900), "RGBA"))
    assert response.status_code == 200, response.text
    second = response.json()
    new_folder = second["image_path"]
    assert new_folder != folder and new_folder.startswith(f"{me.id}/")
    assert second["version"] == first["version"] + 1
    new_uploads = fake.calls("upload")[2:]
    assert sorted(u.object_name for u in new_uploads) == sorted(_files(new_folder))
    for upload in new_uploads:
        _assert_upload(supabase, upload, new_folder)
    assert at_upload == [(folder, first["version"])] * 2
    await supabase.settle()
    (remove,) = fake.calls("remove")
    assert (remove.method, remove.path) == ("DELETE", f"{STORAGE}/avatars")
    supabase.assert_service_role(remove)
    assert sorted(remove.body["prefixes"]) == sorted(_files(folder)) and set(remove.body) == {"prefixes"}
    assert at_remove == [(new_folder, second["version"])]  # after the commit, never before
    assert sorted(o["name"] for o in remove.answer) == sorted(_files(folder))
    assert fake.names(str(me.id)) == sorted(_files(new_folder))

    # The image's URLs: Storage signs exactly the two current objects, for TTL_S.
    requests_before = len(fake.requests)
    response = await client.get(URL, headers=me.headers)
    assert response.status_code == 200, response.text
    image = response.json()
    (sign,) = fake.requests[requests_before:]
    assert (sign.operation, sign.method, sign.path) == ("sign", "POST", f"{STORAGE}/sign/avatars")
    supabase.assert_service_role(sign)
    assert sorted(sign.body["paths"]) == sorted(_files(new_folder))
    assert int(sign.body["expiresIn"]) == TTL_S  # storage3 sends it as a string; Fastify coerces
    assert image == {"image_path": new_folder, "urls": image["urls"], "expires_in": TTL_S}
    assert set(image["urls"]) == {"512", "128"}
    for size, url in image["urls"].items():
        prefix = f"{SUPABASE_URL}/storage/v1/object/sign/avatars/{new_folder}/{size}.webp?token="
        assert url.startswith(prefix), url
        claims = jwt.decode(url.removeprefix(prefix), fake.url_signing_key, algorithms=["HS256"])
        assert claims["url"] == f"avatars/{new_folder}/{size}.webp"
        assert claims["exp"] - claims["iat"] == TTL_S


@pytest.mark.parametrize("failure", ["one_upload_answers_500", "connection_refused"])
async def test_storage_failing_is_503_and_changes_nothing(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User, failure: str
) -> None:
    client, fake = supabase.client, supabase.fake
    await supabase.with_image(me)
    before = await _row(owner, me)
    old_files = fake.names(str(me.id))
    seen = len(fake.requests)

    if failure == "connection_refused":
        fake.go_down()
    else:
        fake.fail("upload", status=500)
    response = await _put(client, me, image_bytes("PNG", (200, 200)))
    assert_error(response, 503, "storage_unavailable")
    assert response.headers["retry-after"] == "1"
    await wait_for(lambda: len(fake.requests[seen:]) >= 2 and all(r.done for r in fake.requests[seen:]))
    await supabase.settle()

    assert await _row(owner, me) == before
    got = await client.get("/avatars/me", headers=me.headers)
    assert got.json()["image_path"] == before[0] and got.headers["etag"] == f'"{before[1]}"'
    # The backend removed again what it had tried to write; the old image is intact.
    uploads = fake.requests[seen:]
    attempted = {_folder_of(u) for u in uploads if u.operation == "upload"}
    (new_folder,) = attempted
    assert new_folder != before[0]
    (remove,) = [r for r in uploads if r.operation == "remove"]
    assert sorted(remove.body["prefixes"]) == sorted(_files(new_folder))
    assert fake.names(str(me.id)) == old_files == sorted(_files(str(before[0])))

    # Once Storage is back, the same request succeeds.
    fake.come_back()
    response = await _put(client, me, image_bytes("PNG", (200, 200)))
    assert response.status_code == 200, response.text
    assert response.json()["version"] == before[1] + 1


async def test_stale_if_match_is_412_before_anything_is_written(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    client, fake = supabase.client, supabase.fake
    current = await supabase.with_image(me)
    seen = len(fake.requests)

    response = await _put(
        client, me, image_bytes("PNG", (64, 64)), **{"If-Match": f'"{current["version"] - 1}"'}
    )
    assert_error(response, 412, "precondition_failed")
    assert response.headers["etag"] == f'"{current["version"]}"'
    await supabase.settle()
    assert fake.requests[seen:] == []
    assert fake.names(str(me.id)) == sorted(_files(current["image_path"]))
    assert await _row(owner, me) == (current["image_path"], current["version"])

    # The current ETag works.
    response = await _put(client, me, image_bytes("PNG", (64, 64)), **{"If-Match": f'"{current["version"]}"'})
    assert response.status_code == 200, response.text


async def test_a_change_while_uploading_makes_if_match_stale_and_the_new_objects_are_removed(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    client, fake = supabase.client, supabase.fake
    current = await supabase.with_image(me)
    seen = len(fake.requests)

    async def dashboard_edit(upload: Recorded) -> None:
        # Someone renames the avatar in the dashboard while the images are being written.
        if upload.object_name.endswith("/512.webp"):
            await owner.execute("update public.avatars set name = 'Renamed' where user_id = $1", me.id)

    fake.hooks["upload"] = dashboard_edit
    response = await _put(client, me, image_bytes("PNG", (64, 64)), **{"If-Match": f'"{current["version"]}"'})
    assert_error(response, 412, "precondition_failed")
    assert response.headers["etag"] == f'"{current["version"] + 1}"'
    await supabase.settle()

    uploads = [r for r in fake.requests[seen:] if r.operation == "upload"]
    assert len(uploads) == 2 and all(u.status == 200 for u in uploads)  # written, then refused
    (refused_folder,) = {_folder_of(u) for u in uploads}
    (remove,) = [r for r in fake.requests[seen:] if r.operation == "remove"]
    assert sorted(remove.body["prefixes"]) == sorted(_files(refused_folder))
    assert fake.names(str(me.id)) == sorted(_files(current["image_path"]))
    assert await _row(owner, me) == (current["image_path"], current["version"] + 1)


async def test_put_without_an_avatar_is_404_and_writes_nothing(supabase: OnSupabase, me: User) -> None:
    response = await _put(supabase.client, me, image_bytes())
    assert_error(response, 404, "avatar_not_found")
    await supabase.settle()
    assert supabase.fake.calls("upload") == []
    assert supabase.fake.names(str(me.id)) == []


async def test_delete_image_removes_the_objects_after_the_commit_and_repeating_it_changes_nothing(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    client, fake = supabase.client, supabase.fake
    with_image = await supabase.with_image(me)
    at_remove: list[tuple[str | None, int]] = []

    async def on_remove(_: Recorded) -> None:
        at_remove.append(await _row(owner, me))

    fake.hooks["remove"] = on_remove
    response = await client.delete(URL, headers=me.headers)
    assert response.status_code == 200, response.text
    without = response.json()
    assert without["image_path"] is None and without["version"] == with_image["version"] + 1
    assert response.headers["etag"] == f'"{without["version"]}"'
    await supabase.settle()
    (remove,) = fake.calls("remove")
    supabase.assert_service_role(remove)
    assert sorted(remove.body["prefixes"]) == sorted(_files(with_image["image_path"]))
    assert at_remove == [(None, without["version"])]
    assert fake.names(str(me.id)) == []

    # Again: unchanged (no new version), and nothing asked of Storage.
    seen = len(fake.requests)
    response = await client.delete(URL, headers=me.headers)
    assert response.status_code == 200, response.text
    assert response.json() == without and response.headers["etag"] == f'"{without["version"]}"'
    assert_error(await client.get(URL, headers=me.headers), 404, "image_not_found")
    await supabase.settle()
    assert fake.requests[seen:] == []
    assert await _row(owner, me) == (None, without["version"])


async def test_deleting_the_avatar_removes_its_image_after_the_row_is_gone(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    client, fake = supabase.client, supabase.fake
    folder = (await supabase.with_image(me))["image_path"]
    rows_at_remove: list[int] = []

    async def on_remove(_: Recorded) -> None:
        rows_at_remove.append(
            await owner.fetchval("select count(*) from public.avatars where user_id = $1", me.id)
        )

    fake.hooks["remove"] = on_remove
    assert (await client.delete("/avatars/me", headers=me.headers)).status_code == 204
    await supabase.settle()
    (remove,) = fake.calls("remove")
    assert sorted(remove.body["prefixes"]) == sorted(_files(folder))
    assert rows_at_remove == [0]
    assert fake.names(str(me.id)) == []


async def test_a_failing_removal_loses_nothing_a_client_sees(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    """The old image's removal runs after the answer: when Storage refuses it, the change
    stands and the objects are merely left behind (DELETE /me lists and removes them)."""
    client, fake = supabase.client, supabase.fake
    first = await supabase.with_image(me)
    fake.fail("remove", status=500)
    response = await _put(client, me, image_bytes("PNG", (64, 64)))
    assert response.status_code == 200, response.text
    second = response.json()
    await supabase.settle()
    assert fake.calls("remove")[0].status == 500
    assert await _row(owner, me) == (second["image_path"], second["version"])
    assert fake.names(str(me.id)) == sorted(_files(first["image_path"]) + _files(second["image_path"]))


async def test_a_failed_upload_leaves_no_object_even_when_the_other_one_lands_late(
    supabase: OnSupabase, owner: asyncpg.Connection, me: User
) -> None:
    client, fake = supabase.client, supabase.fake
    await create_avatar(client, me)
    removal = asyncio.Event()

    async def on_upload(upload: Recorded) -> httpx.Response | None:
        if upload.object_name.endswith("/128.webp"):
            return fake.storage_error(upload, "500", "InternalError", "Internal server error")
        # The 512 rendition is slow (a bigger body): it lands after the cleanup asked, if it asks.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(removal.wait(), 2)
        return None

    async def on_remove(_: Recorded) -> None:
        removal.set()

    fake.hooks["upload"] = on_upload
    fake.hooks["remove"] = on_remove
    assert_error(await _put(client, me, image_bytes()), 503, "storage_unavailable")
    await wait_for(lambda: len(fake.calls("upload")) == 2 and all(u.done for u in fake.calls("upload")))
    await supabase.settle()
    assert await _row(owner, me) == (None, 1)
    assert fake.names(str(me.id)) == []
