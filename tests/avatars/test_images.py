"""Avatar images on the embedded default: files under DATA_DIR, served by the API at
Supabase Storage's signed-URL shape. (Supabase Storage itself: tests/storage.)"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from PIL import Image

from avatar_chat.core.settings import Settings
from avatar_chat.state import AppState
from avatar_chat.storage.local import LocalObjectStore
from tests.support.apps import own_app
from tests.support.assertions import assert_error
from tests.support.factories import User, away_from_minute_boundary, create_avatar
from tests.support.images import costliest, decoded, image_bytes

URL = "/avatars/me/image"


def _store(app_state: AppState) -> LocalObjectStore:
    assert isinstance(app_state.images, LocalObjectStore)
    return app_state.images


async def _files(app_state: AppState, user: User) -> list[str]:
    await app_state.tasks.drain(5)  # removals run after the commit, in the background
    return await _store(app_state).list_folder(str(user.id))


async def _put(client: httpx.AsyncClient, user: User, data: bytes, **headers: str) -> httpx.Response:
    return await client.put(URL, content=data, headers={**user.headers, **headers})


async def _fetch(client: httpx.AsyncClient, url: str) -> httpx.Response:
    parts = urlsplit(url)
    return await client.get(f"{parts.path}?{parts.query}")


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def _one_decode_running(
    settings: Settings, user: User
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState, asyncio.Task[httpx.Response]]]:
    """An app that decodes one image at a time, and an upload of the costliest PNG still
    taken (16.7 MP: a decode that takes a while) whose decode is running."""
    async with own_app(settings, image_decodes_per_worker=1) as (client, state):
        await create_avatar(client, user)
        first = asyncio.create_task(_put(client, user, costliest("png")))
        await _until(lambda: state.avatars.image_decodes_running == 1)
        yield client, state, first


async def test_an_upload_becomes_two_square_webp_images(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    avatar = await create_avatar(app_client, user)
    response = await _put(app_client, user, image_bytes("JPEG", (640, 480)), **{"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (
        changed["version"] == avatar["version"] + 1 and response.headers["etag"] == f'"{changed["version"]}"'
    )
    folder = changed["image_path"]
    assert folder.startswith(f"{user.id}/") and len(folder.split("/")[1]) == 32
    assert await _files(app_state, user) == [f"{folder}/128.webp", f"{folder}/512.webp"]

    image = (await app_client.get(URL, headers=user.headers)).json()
    assert image["image_path"] == folder and image["expires_in"] == 3600
    assert set(image["urls"]) == {"512", "128"}
    for size, url in image["urls"].items():
        assert urlsplit(url).path == f"/storage/v1/object/sign/avatars/{folder}/{size}.webp"
        served = await _fetch(app_client, url)  # no Authorization: the URL is the credential
        assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
        picture = decoded(served.content)
        assert picture.format == "WEBP" and picture.size == (int(size), int(size))
    assert (await app_client.get("/avatars/me", headers=user.headers)).json()["image_path"] == folder


@pytest.mark.parametrize(
    ("fmt", "mode", "alpha"), [("PNG", "RGBA", True), ("WEBP", "RGB", False), ("JPEG", "RGB", False)]
)
async def test_png_jpeg_and_webp_whatever_the_declared_type(
    app_client: httpx.AsyncClient, app_state: AppState, user: User, fmt: str, mode: str, alpha: bool
) -> None:
    await create_avatar(app_client, user)
    # The type is read from the bytes: a wrong or missing Content-Type does not matter.
    response = await _put(
        app_client, user, image_bytes(fmt, (300, 900), mode), **{"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    url = (await app_client.get(URL, headers=user.headers)).json()["urls"]["512"]
    picture = decoded((await _fetch(app_client, url)).content)
    assert picture.size == (512, 512)
    assert ("A" in picture.getbands()) is alpha


async def test_metadata_is_dropped_and_orientation_applied(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    exif[0x010F] = "SecretCam"  # camera maker: personal data that must not be published
    # A wide image whose left half is white, right half black; displayed rotated, the top is white.
    source = Image.new("RGB", (400, 200), (0, 0, 0))
    source.paste((255, 255, 255), (0, 0, 200, 200))
    out = io.BytesIO()
    source.save(out, format="JPEG", exif=exif.tobytes())
    assert (await _put(app_client, user, out.getvalue())).status_code == 200
    url = (await app_client.get(URL, headers=user.headers)).json()["urls"]["512"]
    data = (await _fetch(app_client, url)).content
    assert b"SecretCam" not in data and not decoded(data).getexif()
    picture = decoded(data).convert("L")
    top, bottom = picture.getpixel((256, 5)), picture.getpixel((256, 506))
    assert isinstance(top, int) and isinstance(bottom, int)
    assert top > 200 and bottom < 50


async def test_bad_uploads_are_4xx_and_change_nothing(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    avatar = await create_avatar(app_client, user)
    jpeg = image_bytes("JPEG")
    cases: list[tuple[bytes, int, str]] = [
        (b"", 415, "unsupported_image_type"),
        (b"GIF89a" + b"\x00" * 100, 415, "unsupported_image_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "unsupported_image_type"),
        (jpeg[:40], 422, "image_undecodable"),  # a JPEG header, then nothing
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422, "image_undecodable"),
        (image_bytes("PNG", (8000, 6000), "L", optimize=True), 422, "image_too_many_pixels"),
        (b"\xff\xd8\xff" + b"\x00" * (5 * 1024 * 1024), 413, "payload_too_large"),
    ]
    for data, status, code in cases:
        assert_error(await _put(app_client, user, data, **{"Content-Type": "image/png"}), status, code)
    now = (await app_client.get("/avatars/me", headers=user.headers)).json()
    assert now["version"] == avatar["version"] and now["image_path"] is None
    assert await _files(app_state, user) == []


async def test_a_body_that_is_no_image_is_415_whatever_its_if_match_says(
    app_client: httpx.AsyncClient, user: User
) -> None:
    # RFC 9110, 13.2.1: preconditions are evaluated only for a request that would otherwise
    # succeed; a missing or foreign body is refused as such, not as a stale version.
    avatar = await create_avatar(app_client, user)
    for data in (b"", b"GIF89a" + b"\x00" * 100):
        assert_error(
            await _put(app_client, user, data, **{"If-Match": '"999"'}), 415, "unsupported_image_type"
        )
    stale = await _put(app_client, user, image_bytes(), **{"If-Match": '"999"'})
    assert_error(stale, 412, "precondition_failed")
    now = (await app_client.get("/avatars/me", headers=user.headers)).json()
    assert now["version"] == avatar["version"] and now["image_path"] is None


async def test_the_costliest_png_is_taken_and_one_row_more_is_422(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user)
    assert_error(await _put(app_client, user, costliest("png", extra_rows=1)), 422, "image_too_many_pixels")
    response = await _put(app_client, user, costliest("png"))
    assert response.status_code == 200, response.text


async def test_an_upload_while_the_worker_runs_its_decodes_is_503_busy(
    settings: Settings, user: User
) -> None:
    async with _one_decode_running(settings, user) as (client, state, first):
        busy = await _put(client, user, image_bytes())
        assert_error(busy, 503, "busy")
        assert busy.headers["retry-after"] == "1"
        assert (await first).status_code == 200
        assert state.avatars.image_decodes_running == 0
        assert (await _put(client, user, image_bytes())).status_code == 200


async def test_a_cancelled_upload_keeps_its_decode_until_the_decode_ends(
    settings: Settings, user: User
) -> None:
    async with _one_decode_running(settings, user) as (client, state, first):
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # Its thread still decodes, holding the memory: the next upload is still refused.
        assert state.avatars.image_decodes_running == 1
        assert_error(await _put(client, user, image_bytes()), 503, "busy")
        await _until(lambda: state.avatars.image_decodes_running == 0)
        assert (await _put(client, user, image_bytes())).status_code == 200


async def test_a_chunked_upload_over_the_limit_is_413(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)

    async def chunks() -> Any:
        yield b"\xff\xd8\xff"
        for _ in range(6):
            yield b"\x00" * (1024 * 1024)

    assert_error(await app_client.put(URL, content=chunks(), headers=user.headers), 413, "payload_too_large")


async def test_a_new_image_replaces_the_old_one_after_it_committed(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    await create_avatar(app_client, user)
    first = (await _put(app_client, user, image_bytes("PNG"))).json()
    old_url = (await app_client.get(URL, headers=user.headers)).json()["urls"]["128"]
    second = (await _put(app_client, user, image_bytes("WEBP"))).json()
    assert second["image_path"] != first["image_path"] and second["version"] == first["version"] + 1
    assert await _files(app_state, user) == [
        f"{second['image_path']}/128.webp",
        f"{second['image_path']}/512.webp",
    ]
    assert_error(await _fetch(app_client, old_url), 404, "object_not_found")


async def test_a_stale_if_match_is_412_and_keeps_the_old_image(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    await create_avatar(app_client, user)
    first = (await _put(app_client, user, image_bytes())).json()
    stale = f'"{first["version"] - 1}"'
    response = await _put(app_client, user, image_bytes("PNG"), **{"If-Match": stale})
    assert_error(response, 412, "precondition_failed")
    assert response.headers["etag"] == f'"{first["version"]}"'
    assert await _files(app_state, user) == [
        f"{first['image_path']}/128.webp",
        f"{first['image_path']}/512.webp",
    ]
    fresh = await _put(app_client, user, image_bytes("PNG"), **{"If-Match": f'"{first["version"]}"'})
    assert fresh.status_code == 200


async def test_concurrent_uploads_leave_exactly_the_current_image(
    settings: Settings, owner: asyncpg.Connection, user: User
) -> None:
    # A worker that decodes all six at once (beyond IMAGE_DECODES_PER_WORKER: 503 busy).
    async with own_app(settings, image_decodes_per_worker=6) as (client, state):
        await create_avatar(client, user)
        answers = await asyncio.gather(
            *(_put(client, user, image_bytes(size=(64 + i, 64))) for i in range(6))
        )
        assert [r.status_code for r in answers] == [200] * 6
        current = await owner.fetchval("select image_path from public.avatars where user_id = $1", user.id)
        assert await _files(state, user) == [f"{current}/128.webp", f"{current}/512.webp"]
        assert sorted(r.json()["version"] for r in answers) == list(range(2, 8))


async def test_removing_the_image_and_the_avatar_removes_the_files(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    await create_avatar(app_client, user)
    with_image = (await _put(app_client, user, image_bytes())).json()
    removed = await app_client.delete(URL, headers=user.headers)
    assert removed.status_code == 200
    assert removed.json()["image_path"] is None and removed.json()["version"] == with_image["version"] + 1
    assert await _files(app_state, user) == []
    again = await app_client.delete(URL, headers=user.headers)
    assert again.status_code == 200 and again.json()["version"] == removed.json()["version"]
    assert_error(await app_client.get(URL, headers=user.headers), 404, "image_not_found")

    await _put(app_client, user, image_bytes())
    assert (await app_client.delete("/avatars/me", headers=user.headers)).status_code == 204
    assert await _files(app_state, user) == []


async def test_without_an_avatar_nothing_is_stored(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    assert_error(await _put(app_client, user, image_bytes()), 404, "avatar_not_found")
    assert_error(await app_client.delete(URL, headers=user.headers), 404, "avatar_not_found")
    assert_error(await app_client.get(URL, headers=user.headers), 404, "avatar_not_found")
    assert await _files(app_state, user) == []


async def test_signed_urls_serve_only_their_object_until_they_expire(
    app_client: httpx.AsyncClient, app_state: AppState, user: User, other_user: User
) -> None:
    await create_avatar(app_client, user)
    folder = (await _put(app_client, user, image_bytes())).json()["image_path"]
    url = urlsplit((await app_client.get(URL, headers=user.headers)).json()["urls"]["512"])
    token = url.query.removeprefix("token=")
    base = "/storage/v1/object/sign/avatars"
    assert_error(await app_client.get(f"{base}/{folder}/128.webp?token={token}"), 400, "invalid_signature")
    assert_error(
        await app_client.get(f"{base}/{folder}/512.webp?token={token[:-2]}xx"), 400, "invalid_signature"
    )
    # No token: 400, as Supabase Storage answers (issue #23), not a 422.
    assert_error(await app_client.get(f"{base}/{folder}/512.webp"), 400, "invalid_signature")
    assert_error(await app_client.get(f"{base}/{folder}/%2E%2E/x?token={token}"), 400, "invalid_object_path")
    (expired,) = await _store(app_state).signed_urls(
        [f"{folder}/512.webp"], expires_in_s=-10, base_url="http://t"
    )
    assert_error(await _fetch(app_client, expired), 400, "signature_expired")
    # Another user's avatar holds their own folder only (checked by the database too).
    await create_avatar(app_client, other_user)
    assert (await app_client.get(URL, headers=other_user.headers)).status_code == 404


async def test_the_database_keeps_image_paths_in_their_owners_folder(
    owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    await owner.execute("insert into public.avatars (user_id, name) values ($1, 'A')", user.id)
    for path in (
        f"{other_user.id}/{uuid.uuid4().hex}",
        f"{user.id}/../x",
        "x",
        f"{user.id}/{uuid.uuid4().hex}/y",
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute("update public.avatars set image_path = $2 where user_id = $1", user.id, path)
    await owner.execute(
        "update public.avatars set image_path = $2 where user_id = $1",
        user.id,
        f"{user.id}/{uuid.uuid4().hex}",
    )


async def test_an_upload_refused_as_busy_is_not_counted_against_the_rate(
    settings: Settings, owner: asyncpg.Connection, user: User
) -> None:
    # The worker writes the rate into the shared database at start-up: set back after.
    try:
        async with own_app(settings, image_decodes_per_worker=1, rate_limit_image_uploads_per_minute=2) as (
            client,
            state,
        ):
            await create_avatar(client, user)
            await away_from_minute_boundary(margin_s=10)
            first = asyncio.create_task(_put(client, user, costliest("png")))  # counted: 1
            await _until(lambda: state.avatars.image_decodes_running == 1)
            assert_error(await _put(client, user, image_bytes()), 503, "busy")  # not counted
            assert (await first).status_code == 200
            assert (await _put(client, user, image_bytes())).status_code == 200  # counted: 2
            refused = await _put(client, user, image_bytes())
            assert_error(refused, 429, "image_rate_limited")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert state.avatars.image_decodes_running == 0
    finally:
        await owner.execute("select avatar_chat.configure_image_upload_rate(0)")
