"""Bounded image work with real processes (`avatar-chat serve --workers 2`, issue #18): the
per-user upload rate holds across workers and refuses before any decode, and each worker's
decode cap answers 503 busy at once rather than queueing. (In-process: test_images.py.)"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.support.assertions import assert_error
from tests.support.factories import User, away_from_minute_boundary, create_avatar
from tests.support.images import image_bytes
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.slow

URL = "/avatars/me/image"
RATE = 3


def _stored_folders(server: ServerProcess, user: User) -> set[str]:
    root = server.data_dir / "storage" / "avatars" / str(user.id)
    return {path.name for path in root.iterdir()} if root.exists() else set()


@pytest.fixture(scope="module")
async def rate_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """Two workers that write an upload rate of RATE a minute into the shared database at
    start-up (as every deployment does), set back to off when the module is done."""
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("rate-data")),
        "RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE": str(RATE),
        "IMAGE_DECODES_PER_WORKER": "8",  # none busy here: that is the next test's
    }
    try:
        async with ServerProcess(database_url=database_url, workers=2, env=env) as proc:
            yield proc
    finally:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("select avatar_chat.configure_image_upload_rate(0)")
        finally:
            await conn.close()


async def test_the_upload_rate_holds_across_workers_and_refuses_before_decoding(
    rate_server: ServerProcess, owner: asyncpg.Connection, user: User
) -> None:
    assert await owner.fetchval("select image_uploads_per_minute from avatar_chat.limits") == RATE
    async with rate_server.client() as client:  # no keep-alive: requests spread over both workers
        avatar = await create_avatar(client, user)
        await away_from_minute_boundary(margin_s=10)
        uploads = [image_bytes("PNG", (64 + i, 64)) for i in range(RATE + 3)]
        answers = await asyncio.gather(
            *(client.put(URL, content=data, headers=user.headers) for data in uploads)
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] * RATE + [429] * 3, [r.text for r in answers]
        for refused in (r for r in answers if r.status_code == 429):
            assert_error(refused, 429, "image_rate_limited")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Refused before the decode: bytes that do not decode (422 when decoded) and the
        # costliest kind of PNG are both answered 429, and nothing more is counted.
        for data in (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, image_bytes("PNG", (6000, 6000), "L")):
            assert_error(await client.put(URL, content=data, headers=user.headers), 429, "image_rate_limited")
        counted = await owner.fetchval(
            "select uploads from avatar_chat.image_upload_counters where user_id = $1", user.id
        )
        assert counted == RATE
        now = (await client.get("/avatars/me", headers=user.headers)).json()
        assert now["version"] == avatar["version"] + RATE
        await asyncio.sleep(0.5)  # the replaced images are removed in the background
        assert _stored_folders(rate_server, user) == {now["image_path"].split("/")[1]}


async def test_the_upload_rate_counts_per_user(
    rate_server: ServerProcess, user: User, other_user: User
) -> None:
    async with rate_server.client() as client:
        for each in (user, other_user):
            await create_avatar(client, each)
        await away_from_minute_boundary(margin_s=10)
        for _ in range(RATE):
            assert (await client.put(URL, content=image_bytes(), headers=user.headers)).status_code == 200
        assert_error(
            await client.put(URL, content=image_bytes(), headers=user.headers), 429, "image_rate_limited"
        )
        assert (await client.put(URL, content=image_bytes(), headers=other_user.headers)).status_code == 200


def _costly_png() -> bytes:
    """A 16.7 MP RGBA PNG of noise, under every limit: about 0.35 s of CPU to decode."""
    small = Image.frombytes("RGBA", (511, 511), random.Random(18).randbytes(511 * 511 * 4))
    out = io.BytesIO()
    small.resize((4088, 4088), Image.Resampling.NEAREST).save(out, format="PNG", compress_level=1)
    return out.getvalue()


async def test_parallel_large_uploads_beyond_the_decode_cap_are_503_busy_at_once(
    database_url: str, user: User, tmp_path: Path
) -> None:
    # One decode at a time per worker, two workers; the rate off (the server's default here).
    env = {"DATA_DIR": str(tmp_path), "IMAGE_DECODES_PER_WORKER": "1"}
    async with ServerProcess(database_url=database_url, workers=2, env=env) as server:
        data = _costly_png()
        async with server.client() as client:
            await create_avatar(client, user)
            start = time.monotonic()

            async def put() -> tuple[httpx.Response, float]:
                response = await client.put(URL, content=data, headers=user.headers)
                return response, time.monotonic() - start

            answers = await asyncio.gather(*(put() for _ in range(12)))
            taken = [elapsed for r, elapsed in answers if r.status_code == 200]
            busy = [(r, elapsed) for r, elapsed in answers if r.status_code != 200]
            assert taken and busy, [r.status_code for r, _ in answers]
            for response, _ in busy:
                assert_error(response, 503, "busy")
                assert response.headers["retry-after"] == "1"
            # Never queued: a refused upload is answered while a decode still runs, so
            # before the last taken one ends.
            assert max(elapsed for _, elapsed in busy) <= max(taken)
            # Both workers decode at once at most one each: far fewer taken than sent.
            assert len(taken) < len(answers)
            # And the workers are free again afterwards.
            assert (await client.put(URL, content=image_bytes(), headers=user.headers)).status_code == 200
