"""POST /me/import (docs/portability.md): an export taken into another account, all of it
or nothing, once per archive; hostile archives refused with a clear 4xx and nothing
changed."""

from __future__ import annotations

import io
import json
import stat
import uuid
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from avatar_chat.core.settings import Settings
from tests.support.apps import own_app
from tests.support.assertions import assert_error
from tests.support.databases import user_rows
from tests.support.factories import User, create_avatar, create_conversation, create_user, history, send

ZIP = {"Content-Type": "application/zip"}


async def _account(client: httpx.AsyncClient, user: User) -> None:
    """An avatar with two versions; two conversations, one with a regenerated reply."""
    await create_avatar(client, user, name="Ava", backstory="Lives by the sea.")
    patched = await client.patch(
        "/avatars/me/persona", json={"personality": "caring"}, headers={**user.headers, "If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.text
    first = (await create_conversation(client, user))["id"]
    second = (await create_conversation(client, user, mode="companion"))["id"]
    for text in ("hello", "tell me more"):
        assert (await send(client, user, first, text)).status_code == 201
    assert (await send(client, user, second, "another chat")).status_code == 201
    latest = (await history(client, user, first))[-1]
    regenerated = await client.post(
        f"/conversations/{first}/messages/{latest['id']}/regenerate", headers=user.headers
    )
    assert regenerated.status_code == 201, regenerated.text


async def _export(client: httpx.AsyncClient, user: User) -> bytes:
    response = await client.get("/me/export", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.content


def _members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {name: z.read(name) for name in z.namelist()}


def _zip(members: dict[str, bytes], *, tweak: Callable[[zipfile.ZipFile], None] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if tweak is not None:
            tweak(z)
    return out.getvalue()


def _comparable(archive: bytes) -> dict[str, Any]:
    """What an archive says, without the ids an import renews."""
    files = _members(archive)
    avatar = json.loads(files["avatar.json"])
    conversations = []
    for name in sorted(n for n in files if n.startswith("conversations/")):
        conversation = json.loads(files[name])
        ids = {m["id"]: m["seq"] for m in conversation["messages"]}
        conversations.append(
            {
                "title": conversation["title"],
                "mode": conversation["mode"],
                "created_at": conversation["created_at"],
                "messages": [
                    {k: v for k, v in m.items() if k not in ("id", "reply_to", "updated_at")}
                    | {"reply_to": ids.get(m["reply_to"]), "usage": len(m["usage"])}
                    for m in conversation["messages"]
                ],
            }
        )
    return {
        "avatar": {k: avatar[k] for k in ("name", "personality", "backstory", "version")},
        "history": avatar["history"],
        "conversations": sorted(conversations, key=lambda c: c["created_at"]),
        "usage": len(json.loads(files["usage.json"])["records"]),
    }


async def test_an_export_imports_into_another_account_once(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    await _account(app_client, user)
    archive = await _export(app_client, user)

    imported = await app_client.post("/me/import", content=archive, headers={**other_user.headers, **ZIP})
    assert imported.status_code == 201, imported.text
    result = imported.json()
    assert (result["conversations"], result["messages"], result["usage_records"], result["avatar"]) == (
        2,
        7,
        4,
        "imported",
    )
    assert result["already_imported"] is False
    # The other account now holds the same conversations, messages, variants, times and
    # avatar history (new ids): its own export says so.
    assert _comparable(await _export(app_client, other_user)) == _comparable(archive)
    listed = (await app_client.get("/conversations", headers=other_user.headers)).json()["items"]
    assert len(listed) == 2

    again = await app_client.post("/me/import", content=archive, headers={**other_user.headers, **ZIP})
    assert again.status_code == 200, again.text
    assert again.json() == result | {"already_imported": True}
    assert len((await app_client.get("/conversations", headers=other_user.headers)).json()["items"]) == 2
    # An imported turn is no model call: nothing counted against the plan.
    assert (await app_client.get("/me/usage", headers=other_user.headers)).json()["day"]["messages"] == 0
    # And the account goes on as any other: a new turn in an imported conversation.
    chat = listed[0]["id"]
    sent = await send(app_client, other_user, chat, "back again")
    assert sent.status_code == 201, sent.text
    seqs = [m["seq"] for m in await history(app_client, other_user, chat)]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


async def test_the_avatar_is_kept_unless_replace_is_asked(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    await _account(app_client, user)
    archive = await _export(app_client, user)
    await create_avatar(app_client, other_user, name="Mine")
    kept = await app_client.post("/me/import", content=archive, headers={**other_user.headers, **ZIP})
    assert kept.json()["avatar"] == "kept"
    assert (await app_client.get("/avatars/me", headers=other_user.headers)).json()["name"] == "Mine"

    third = await create_user(owner)
    await create_avatar(app_client, third, name="Mine too")
    replaced = await app_client.post(
        "/me/import", params={"avatar": "replace"}, content=archive, headers={**third.headers, **ZIP}
    )
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["avatar"] == "replaced"
    avatar = (await app_client.get("/avatars/me", headers=third.headers)).json()
    assert (avatar["name"], avatar["personality"], avatar["version"]) == ("Ava", "caring", 2)


def _symlink(z: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("avatar.webp")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(info, "/etc/passwd")


def _duplicate(z: zipfile.ZipFile) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z.writestr("usage.json", '{"records": []}')


HOSTILE: dict[str, tuple[Callable[[dict[str, bytes]], bytes], str]] = {
    "not a zip": (lambda m: b"PK\x03\x04 not really a zip at all", "archive_invalid"),
    "a zip bomb": (lambda m: _zip(m | {"usage.json": b" " * (8 * 1024 * 1024)}), "archive_unsafe"),
    "a path that climbs": (lambda m: _zip(m | {"../evil.json": b"{}"}), "archive_unsafe"),
    "an absolute path": (lambda m: _zip(m | {"/etc/evil.json": b"{}"}), "archive_unsafe"),
    "a windows path": (lambda m: _zip(m | {"conversations\\x.json": b"{}"}), "archive_unsafe"),
    "a link": (
        lambda m: _zip({k: v for k, v in m.items() if k != "avatar.webp"}, tweak=_symlink),
        "archive_unsafe",
    ),
    "a name twice": (lambda m: _zip(m, tweak=_duplicate), "archive_unsafe"),
    "a file this format has not": (lambda m: _zip(m | {"run.sh": b"rm -rf /"}), "archive_invalid"),
    "no export.json": (lambda m: _zip({k: v for k, v in m.items() if k != "export.json"}), "archive_invalid"),
    "another version": (
        lambda m: _zip(
            m | {"export.json": json.dumps(json.loads(m["export.json"]) | {"version": 2}).encode()}
        ),
        "archive_version_unsupported",
    ),
    "malformed JSON": (lambda m: _zip(m | {_first_conversation(m): b'{"id": '}), "archive_invalid"),
    "schema-invalid JSON": (
        lambda m: _zip(m | {_first_conversation(m): _edit(m, lambda c: c | {"mode": "sideways"})}),
        "archive_invalid",
    ),
    "a file named for another conversation": (
        lambda m: _zip(m | {_first_conversation(m): _edit(m, lambda c: c | {"id": str(uuid.uuid4())})}),
        "archive_invalid",
    ),
}


def _first_conversation(members: dict[str, bytes]) -> str:
    return sorted(n for n in members if n.startswith("conversations/"))[0]


def _edit(members: dict[str, bytes], change: Callable[[dict[str, Any]], dict[str, Any]]) -> bytes:
    return json.dumps(change(json.loads(members[_first_conversation(members)]))).encode()


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_archives_are_refused_and_change_nothing(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, other_user: User, case: str
) -> None:
    await _account(app_client, user)
    members = _members(await _export(app_client, user))
    build, code = HOSTILE[case]
    before = await user_rows(owner, other_user)
    refused = await app_client.post(
        "/me/import", content=build(members), headers={**other_user.headers, **ZIP}
    )
    assert_error(refused, 422, code)
    assert await user_rows(owner, other_user) == before


async def test_someone_elses_ids_in_references_are_refused_and_nothing_is_written(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    """A reply naming a message that is not in its conversation's file (here: another
    user's real message) is refused in SQL, after an earlier conversation of the same
    archive was written: the transaction takes all of it back."""
    await _account(app_client, user)
    members = _members(await _export(app_client, user))
    victim = await create_user(owner)
    victims_chat = (
        (await create_conversation(app_client, victim)) if await create_avatar(app_client, victim) else {}
    )
    assert (await send(app_client, victim, victims_chat["id"], "private")).status_code == 201
    victims_message = (await history(app_client, victim, victims_chat["id"]))[0]["id"]
    last = sorted(n for n in members if n.startswith("conversations/"))[-1]
    conversation = json.loads(members[last])
    conversation["messages"][-1]["reply_to"] = victims_message
    hostile = _zip(members | {last: json.dumps(conversation).encode()})
    before = await user_rows(owner, other_user)
    refused = await app_client.post("/me/import", content=hostile, headers={**other_user.headers, **ZIP})
    assert_error(refused, 422, "archive_invalid")
    assert refused.json()["error"]["details"]["file"] == last
    assert await user_rows(owner, other_user) == before
    assert (
        await owner.fetchval(
            "select count(*) from public.messages where reply_to = $1", uuid.UUID(victims_message)
        )
        == 1
    )


async def test_sizes_and_media_type(
    settings: Settings, owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    async with own_app(settings, import_max_bytes=4096, import_max_file_bytes=2048) as (client, _):
        await _account(client, user)
        members = _members(await _export(client, user))
        small = {"export.json": members["export.json"], "usage.json": b'{"records": []}'}
        assert_error(
            await client.post(
                "/me/import",
                content=_zip(small),
                headers={**other_user.headers, "Content-Type": "text/plain"},
            ),
            415,
            "unsupported_media_type",
        )
        assert_error(
            await client.post("/me/import", content=b"x" * 5000, headers={**other_user.headers, **ZIP}),
            413,
            "payload_too_large",
        )
        big_file = _zip(small | {"usage.json": json.dumps({"records": [], "pad": "x" * 3000}).encode()})
        assert_error(
            await client.post("/me/import", content=big_file, headers={**other_user.headers, **ZIP}),
            422,
            "archive_unsafe",
        )
        imported = await client.post("/me/import", content=_zip(small), headers={**other_user.headers, **ZIP})
        assert imported.status_code == 201, imported.text
        assert imported.json()["avatar"] == "none" and imported.json()["conversations"] == 0


async def test_an_avatar_made_from_a_character_card_keeps_its_card(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, other_user: User
) -> None:
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Seraphina",
            "description": "A guardian of the forest glade.",
            "personality": "caring, gentle",
            "scenario": "You wake up in her glade.",
            "first_mes": "*She smiles.* You're safe now.",
            "mes_example": "",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": ["Welcome back."],
            "tags": ["fantasy", "caring"],
            "creator": "someone",
            "character_version": "1.2",
            "extensions": {"talkativeness": "0.5"},
        },
    }
    created = await app_client.post("/avatars/me/card", json=card, headers=user.headers)
    assert created.status_code == 201, created.text
    before = (await app_client.get("/avatars/me/card", headers=user.headers)).json()
    archive = await _export(app_client, user)
    imported = await app_client.post("/me/import", content=archive, headers={**other_user.headers, **ZIP})
    assert imported.status_code == 201, imported.text
    after = (await app_client.get("/avatars/me/card", headers=other_user.headers)).json()
    assert after == before
    assert after["data"]["alternate_greetings"] == ["Welcome back."]
