"""GET /me/export (docs/portability.md): the whole account in one archive, read from one
snapshot as the user, checked against the archive's own JSON Schemas and models."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import pytest

from avatar_chat.core.settings import Settings
from avatar_chat.portability.schemas import (
    FILE_MODELS,
    AvatarFile,
    ConversationFile,
    Manifest,
    UsageFile,
    json_schema,
)
from tests.support.apps import own_app
from tests.support.assertions import assert_error
from tests.support.factories import User, create_avatar, create_conversation, history, send
from tests.support.images import image_bytes


def _archive(response: httpx.Response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith('attachment; filename="avatar-chat-export-')
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    return archive


def _json(archive: zipfile.ZipFile, name: str) -> Any:
    document = json.loads(archive.read(name))
    kind = "conversation" if name.startswith("conversations/") else name.removesuffix(".json")
    # jsonschema_rs: what schemathesis validates with (a test dependency already).
    jsonschema_rs.validate(json.loads(archive.read(f"schemas/{kind}.schema.json")), document)
    return document


async def test_an_export_holds_the_whole_account(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    await create_avatar(app_client, user, name="Ava")
    patched = await app_client.patch(
        "/avatars/me/persona", json={"personality": "witty"}, headers={**user.headers, "If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.text
    first = (await create_conversation(app_client, user))["id"]
    second = (await create_conversation(app_client, user, mode="companion"))["id"]
    for text in ("hello", "tell me more"):
        assert (await send(app_client, user, first, text)).status_code == 201
    assert (await send(app_client, user, second, "another chat")).status_code == 201
    latest = (await history(app_client, user, first))[-1]
    regenerated = await app_client.post(
        f"/conversations/{first}/messages/{latest['id']}/regenerate", headers=user.headers
    )
    assert regenerated.status_code == 201, regenerated.text
    await create_avatar(app_client, other_user, name="Someone else")
    assert (
        await send(app_client, other_user, (await create_conversation(app_client, other_user))["id"], "x")
    ).status_code == 201

    archive = _archive(await app_client.get("/me/export", headers=user.headers))
    names = set(archive.namelist())
    assert names == {
        "README.md",
        "export.json",
        "avatar.json",
        f"conversations/{first}.json",
        f"conversations/{second}.json",
        "usage.json",
        *(f"schemas/{name}.schema.json" for name in FILE_MODELS),
    }
    assert archive.namelist()[0] == "README.md"  # what a client gets first
    manifest = Manifest.model_validate(_json(archive, "export.json"))
    assert (manifest.user.id, manifest.user.email) == (user.id, user.email)
    assert manifest.counts.model_dump() == {
        "conversations": 2,
        "messages": 7,
        "usage_records": 4,
        "avatar_versions": 2,
    }
    avatar = AvatarFile.model_validate(_json(archive, "avatar.json"))
    assert (avatar.name, avatar.personality, avatar.version) == ("Ava", "witty", 2)
    assert [(v.version, v.personality) for v in avatar.history] == [(1, "friendly"), (2, "witty")]

    conversation = ConversationFile.model_validate(_json(archive, f"conversations/{first}.json"))
    served = await history(app_client, user, first)
    assert [str(m.id) for m in conversation.messages if m.is_current] == [m["id"] for m in served]
    assert [m.seq for m in conversation.messages] == sorted(m.seq for m in conversation.messages)
    replies = [m for m in conversation.messages if m.reply_to == uuid.UUID(latest["reply_to"])]
    assert sorted((m.variant, m.is_current) for m in replies) == [(0, False), (1, True)]
    assert all(
        m.persona_version == 2 and len(m.usage) == 1 for m in conversation.messages if m.role == "assistant"
    )
    assert conversation.messages[1].usage[0].kind == "reply"
    usage = UsageFile.model_validate(_json(archive, "usage.json"))
    assert len(usage.records) == 4 and {r.conversation_id for r in usage.records} == {
        uuid.UUID(first),
        uuid.UUID(second),
    }
    assert "Someone else" not in str([archive.read(n) for n in names])


def test_the_shipped_json_schemas_are_the_models() -> None:
    """json_schemas/ in the package (and so in every archive) is what the models say."""
    from importlib import resources

    folder = resources.files("avatar_chat.portability").joinpath("json_schemas")
    for name in FILE_MODELS:
        assert folder.joinpath(f"{name}.schema.json").read_text("utf-8") == json_schema(name), (
            f"regenerate json_schemas/{name}.schema.json (docs/development.md)"
        )


async def test_one_export_at_a_time_and_a_few_a_day(
    settings: Settings, owner: asyncpg.Connection, user: User
) -> None:
    """The lease: a second export while one runs is refused on any worker, until the first
    ends; the day's count holds past it."""
    async with own_app(settings, exports_per_day=2) as (client, state):
        claims = json.dumps({"sub": str(user.id), "role": "authenticated"})
        token = await owner.fetchval("select avatar_chat.begin_export($1, null, 60, 0)", claims)
        assert_error(await client.get("/me/export", headers=user.headers), 429, "export_in_progress")
        await owner.execute("select avatar_chat.end_export($1, $2)", user.id, token)
        _archive(await client.get("/me/export", headers=user.headers))  # the second of the day
        limited = await client.get("/me/export", headers=user.headers)
        assert_error(limited, 429, "export_limited")
        assert 0 < int(limited.headers["Retry-After"]) <= 86_400
        assert state.portability.exports_running == 0


async def test_a_busy_worker_answers_503(settings: Settings, user: User) -> None:
    async with own_app(settings, exports_per_worker=1) as (client, state):
        state.portability._running = 1  # another export streams on this worker
        busy = await client.get("/me/export", headers=user.headers)
        assert_error(busy, 503, "busy")
        assert busy.headers["Retry-After"]


@pytest.mark.parametrize("path", ["/me/export"])
async def test_anonymous_is_refused(app_client: httpx.AsyncClient, path: str) -> None:
    assert_error(await app_client.get(path), 401, "missing_token")


async def test_the_avatar_image_is_in_the_archive(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    uploaded = await app_client.put(
        "/avatars/me/image",
        content=image_bytes("PNG", (600, 600)),
        headers={**user.headers, "Content-Type": "image/png", "If-Match": '"1"'},
    )
    assert uploaded.status_code == 200, uploaded.text
    urls = (await app_client.get("/avatars/me/image", headers=user.headers)).json()
    stored = await app_client.get(urls["urls"]["512"])
    assert stored.status_code == 200
    archive = _archive(await app_client.get("/me/export", headers=user.headers))
    assert Manifest.model_validate(_json(archive, "export.json")).avatar_image == "avatar.webp"
    image = archive.read("avatar.webp")
    assert image[:4] == b"RIFF" and image[8:12] == b"WEBP"
    assert image == stored.content
