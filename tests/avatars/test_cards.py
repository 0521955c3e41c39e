"""Avatars as character cards (issue #21): POST /avatars/me/card from a Character Card V2
or V3, as JSON or PNG, and GET /avatars/me/card back, on the real migrated database and
the embedded default's storage. The cards are written here from the published specs
(malfoy/character-card-spec-v2, kwaroran/character-card-spec-v3); the PNGs are made with
Pillow (PngInfo tEXt chunks, as SillyTavern writes them) and read back with Pillow."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from PIL import Image, PngImagePlugin

from avatar_chat.avatars.card import CARD_MAX_BYTES, KEYWORDS, backstory_of, persona_line, personality_of
from avatar_chat.avatars.persona import PersonalityType
from avatar_chat.core.settings import Settings
from avatar_chat.state import AppState
from avatar_chat.storage.local import LocalObjectStore
from tests.fakes.supabase import on_supabase
from tests.support.assertions import assert_error
from tests.support.databases import as_role, claims_of
from tests.support.factories import User, away_from_minute_boundary, create_avatar
from tests.support.images import decoded, image_bytes

URL = "/avatars/me/card"
JSON = {"Content-Type": "application/json"}
RED = (200, 30, 60)

# A Character Card V2 with every field of the spec (a lorebook with one entry of every
# field, extensions of other front-ends), texts with macros, new lines and non-ASCII.
V2_CARD: dict[str, Any] = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Seraphina",
        "description": "Seraphina is the guardian of Eldoria, la forêt ancienne 🌲. She heals the lost.",
        "personality": "gentle, caring, protective and a little shy",
        "scenario": "{{user}} wakes in Seraphina's glade after an attack by shadow beasts.",
        "first_mes": '*You wake with a start.* "Easy now," {{char}} says. "You are safe here."',
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: I am Seraphina, guardian of this forest.",
        "creator_notes": "Works best with a long context.",
        "system_prompt": "You are {{char}}. {{original}}",
        "post_history_instructions": "Stay in character. {{original}}",
        "alternate_greetings": ["*Seraphina hums by the fire.*", '"You\'re awake. Good."'],
        "character_book": {
            "name": "Eldoria",
            "description": "The forest and its people.",
            "scan_depth": 4,
            "token_budget": 512,
            "recursive_scanning": False,
            "extensions": {},
            "entries": [
                {
                    "keys": ["glade", "clearing"],
                    "content": "The glade is hidden by old magic.",
                    "extensions": {"depth": 4},
                    "enabled": True,
                    "insertion_order": 100,
                    "case_sensitive": False,
                    "name": "The glade",
                    "priority": 10,
                    "id": 1,
                    "comment": "",
                    "selective": True,
                    "secondary_keys": ["magic"],
                    "constant": False,
                    "position": "before_char",
                }
            ],
        },
        "tags": ["fantasy", "female", "guardian"],
        "creator": "example",
        "character_version": "1.2",
        "extensions": {
            "talkativeness": "0.5",
            "fav": False,
            "world": "Eldoria",
            "depth_prompt": {"prompt": "Seraphina is kind.", "depth": 4, "role": "system"},
        },
    },
}

# A Character Card V3: V2's fields and every field V3 adds.
V3_CARD: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        **copy.deepcopy(V2_CARD["data"]),
        "name": "Kael",
        "description": "Kael is a court jester who never stops talking.",
        "personality": "sarcastic, clever, quick-witted",
        "tags": ["comedy"],
        "nickname": "the Fool",
        "creator_notes_multilingual": {"en": "Best with comedy.", "fr": "Idéal pour la comédie."},
        "source": ["https://example.com/kael"],
        "group_only_greetings": ["*Kael bows to everyone at once.*"],
        "creation_date": 1733580000,
        "modification_date": 1733583600,
        "assets": [
            {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
            {"type": "background", "uri": "https://example.com/hall.png", "name": "hall", "ext": "png"},
        ],
    },
}
V3_CARD["data"]["character_book"]["entries"][0] |= {"use_regex": False}


def png_card(*, picture: bytes | None = None, **cards: dict[str, Any] | bytes) -> bytes:
    """A PNG (`picture`, or a red square) with these tEXt chunks: a card is written as
    SillyTavern writes it (base64 of its JSON), bytes as they are."""
    image = Image.open(io.BytesIO(picture)) if picture else Image.new("RGB", (96, 64), RED)
    info = PngImagePlugin.PngInfo()
    for keyword, card in cards.items():
        text = card if isinstance(card, bytes) else base64.b64encode(json.dumps(card).encode())
        info.add_text(keyword, text.decode("latin-1"))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) if crc is None else crc)
    )


def with_chunk(png: bytes, extra: bytes) -> bytes:
    """`png` with `extra` (whole chunks) after its IHDR."""
    return png[:33] + extra + png[33:]


def png_texts(png: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG, as Pillow reads them."""
    image = decoded(png)
    assert image.format == "PNG"
    texts: dict[str, str] = image.text  # type: ignore[attr-defined]
    return texts


def card_in(png: bytes, keyword: str) -> dict[str, Any]:
    card: dict[str, Any] = json.loads(base64.b64decode(png_texts(png)[keyword]))
    return card


def assert_carries(original: dict[str, Any], exported: dict[str, Any]) -> None:
    """`exported` holds everything `original` held (our personality added to extensions)."""
    assert (exported["spec"], exported["spec_version"]) == (original["spec"], original["spec_version"])
    for key, value in original["data"].items():
        if key == "extensions":
            theirs = {k: v for k, v in exported["data"]["extensions"].items() if k != "avatar_chat"}
            assert theirs == value
        else:
            assert exported["data"][key] == value, key


async def _post(
    client: httpx.AsyncClient, user: User, body: bytes | dict[str, Any], **headers: str
) -> httpx.Response:
    if isinstance(body, dict):
        return await client.post(URL, json=body, headers={**user.headers, **headers})
    return await client.post(URL, content=body, headers={**user.headers, **headers})


async def _card(client: httpx.AsyncClient, user: User, **params: str) -> httpx.Response:
    response = await client.get(URL, params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response


async def _files(app_state: AppState, user: User) -> list[str]:
    await app_state.tasks.drain(5)
    return await app_state.images.list_folder(str(user.id))


async def _image_pixel(client: httpx.AsyncClient, user: User) -> tuple[int, ...]:
    """The centre pixel of the avatar's stored 512-pixel image."""
    url = (await client.get("/avatars/me/image", headers=user.headers)).json()["urls"]["512"]
    parts = urlsplit(url)
    picture = decoded((await client.get(f"{parts.path}?{parts.query}")).content)
    assert picture.size == (512, 512)
    pixel: tuple[int, ...] = picture.convert("RGB").getpixel((256, 256))  # type: ignore[assignment]
    return pixel


def _near(pixel: tuple[int, ...], colour: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


# --- round trips -----------------------------------------------------------------------------


async def test_a_v2_json_card_makes_the_avatar_and_comes_back_whole(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    response = await _post(app_client, user, V2_CARD)
    assert response.status_code == 201, response.text
    avatar = response.json()
    assert response.headers["etag"] == '"1"' and response.headers["location"] == "/avatars/me"
    assert avatar["name"] == "Seraphina"
    assert avatar["personality"] == "caring"  # gentle, caring, protective: the personality text decides
    data = V2_CARD["data"]
    assert avatar["backstory"] == f"{data['description']}\n\nPersonality: {data['personality']}"
    assert avatar["image_path"] is None and await _files(app_state, user) == []

    exported = await _card(app_client, user)
    assert exported.headers["content-type"] == "application/json" and exported.headers["etag"] == '"1"'
    card = exported.json()
    assert_carries(V2_CARD, card)
    assert card["data"]["extensions"]["avatar_chat"] == {"personality": "caring"}

    # Sent back in over the avatar, it is the same avatar (a new version of it).
    again = await _post(app_client, user, card, **{"If-Match": '"1"'})
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("name", "personality", "backstory")} == {
        k: avatar[k] for k in ("name", "personality", "backstory")
    }
    assert again.json()["version"] == 2
    assert (await _card(app_client, user)).json() == card


async def test_a_v3_json_card_with_an_embedded_icon(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    card = copy.deepcopy(V3_CARD)
    icon = base64.b64encode(image_bytes("PNG", (300, 200))).decode()
    card["data"]["assets"][0]["uri"] = f"data:image/png;base64,{icon}"
    response = await _post(app_client, user, card)
    assert response.status_code == 201, response.text
    avatar = response.json()
    assert (avatar["name"], avatar["personality"]) == ("Kael", "witty")
    # The icon is the avatar's image, stored as any upload is.
    folder = avatar["image_path"]
    assert folder is not None and await _files(app_state, user) == [
        f"{folder}/128.webp",
        f"{folder}/512.webp",
    ]
    assert _near(await _image_pixel(app_client, user), RED)

    exported = (await _card(app_client, user)).json()
    assert exported["spec"] == "chara_card_v3"
    assert_carries(card, exported)


async def test_a_png_card_makes_the_avatar_and_its_image(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    response = await _post(app_client, user, png_card(chara=V2_CARD), **{"Content-Type": "image/png"})
    assert response.status_code == 201, response.text
    avatar = response.json()
    assert avatar["name"] == "Seraphina" and avatar["image_path"] is not None
    assert len(await _files(app_state, user)) == 2
    assert _near(await _image_pixel(app_client, user), RED)

    exported = await _card(app_client, user, format="png")
    assert exported.headers["content-type"] == "image/png" and exported.headers["etag"] == '"1"'
    assert exported.headers["content-disposition"].startswith('attachment; filename="Seraphina.png"')
    picture = decoded(exported.content)
    assert picture.size == (512, 512)
    assert _near(picture.convert("RGB").getpixel((256, 256)), RED)  # type: ignore[arg-type]
    assert set(png_texts(exported.content)) == {"chara"}
    assert_carries(V2_CARD, card_in(exported.content, "chara"))
    assert card_in(exported.content, "chara") == (await _card(app_client, user)).json()


async def test_a_png_with_ccv3_and_chara_is_read_from_ccv3_and_written_with_both(
    app_client: httpx.AsyncClient, user: User
) -> None:
    # An editor's V3 PNG carries the card twice; readers take ccv3.
    png = png_card(chara=V2_CARD, ccv3=V3_CARD)
    response = await _post(app_client, user, png, **{"Content-Type": "image/png"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Kael"

    exported = (await _card(app_client, user, format="png")).content
    assert set(png_texts(exported)) == {"chara", "ccv3"}
    v3 = card_in(exported, "ccv3")
    assert_carries(V3_CARD, v3)
    # chara: the same card as V2, for readers that know only V2.
    v2 = card_in(exported, "chara")
    assert (v2["spec"], v2["spec_version"]) == ("chara_card_v2", "2.0")
    assert v2["data"] == {k: v for k, v in v3["data"].items() if k not in V3_ONLY}
    # And back in: the same avatar, the same card.
    again = await _post(app_client, user, exported, **{"If-Match": '"1"'})
    assert again.status_code == 200, again.text
    assert (await _card(app_client, user)).json() == v3


V3_ONLY = {
    "assets",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "group_only_greetings",
    "creation_date",
    "modification_date",
}


async def test_an_avatar_without_an_image_gets_a_placeholder(
    app_client: httpx.AsyncClient, user: User
) -> None:
    await create_avatar(app_client, user, name="Ava", personality="witty", backstory="Born in a lighthouse.")
    first = (await _card(app_client, user, format="png")).content
    picture = decoded(first).convert("RGB")
    assert picture.size == (512, 512)
    colours = {colour for _, colour in picture.getcolors(512 * 512) or []}
    assert (255, 255, 255) in colours and len(colours) > 2  # a background and a white initial
    assert (await _card(app_client, user, format="png")).content == first  # the same each time

    card = card_in(first, "chara")
    assert card["spec"] == "chara_card_v2"
    assert card["data"]["name"] == "Ava"
    assert card["data"]["description"] == "Born in a lighthouse."
    assert card["data"]["personality"] == persona_line(PersonalityType.witty)
    assert card["data"]["extensions"] == {"avatar_chat": {"personality": "witty"}}
    for field in ("scenario", "first_mes", "mes_example", "creator_notes", "system_prompt", "creator"):
        assert card["data"][field] == ""
    assert card["data"]["alternate_greetings"] == [] and card["data"]["tags"] == []


async def test_a_native_avatar_goes_out_and_comes_back_unchanged(
    app_client: httpx.AsyncClient, user: User
) -> None:
    avatar = await create_avatar(
        app_client, user, name="Émile", personality="professional", backstory="A clerk."
    )
    exported = (await _card(app_client, user, format="png")).content
    assert (
        "filename*=UTF-8''%C3%89mile.png"
        in (await _card(app_client, user, format="png")).headers["content-disposition"]
    )
    response = await _post(app_client, user, exported, **{"If-Match": f'"{avatar["version"]}"'})
    assert response.status_code == 200, response.text
    again = response.json()
    assert (again["name"], again["personality"], again["backstory"]) == ("Émile", "professional", "A clerk.")
    assert again["version"] == avatar["version"] + 1


async def test_edits_after_an_import_show_in_the_card(app_client: httpx.AsyncClient, user: User) -> None:
    assert (await _post(app_client, user, V2_CARD)).status_code == 201
    # A persona switch alone: the card's own texts stay, our personality follows.
    await app_client.patch("/avatars/me/persona", json={"personality": "playful"}, headers=user.headers)
    card = (await _card(app_client, user)).json()
    assert card["data"]["personality"] == V2_CARD["data"]["personality"]
    assert card["data"]["extensions"]["avatar_chat"] == {"personality": "playful"}
    # A new backstory and name: the description is the backstory now.
    await app_client.patch(
        "/avatars/me", json={"name": "Sera", "backstory": "Retired."}, headers=user.headers
    )
    card = (await _card(app_client, user)).json()
    assert (card["data"]["name"], card["data"]["description"]) == ("Sera", "Retired.")
    assert card["data"]["personality"] == persona_line(PersonalityType.playful)
    assert card["data"]["first_mes"] == V2_CARD["data"]["first_mes"]  # the rest as it came


# --- updates -------------------------------------------------------------------------------------


async def test_if_match_overwrites_the_avatar_and_keeps_its_image(
    app_client: httpx.AsyncClient, app_state: AppState, owner: asyncpg.Connection, user: User
) -> None:
    created = await _post(app_client, user, png_card(chara=V2_CARD))
    assert created.status_code == 201, created.text
    image_path = created.json()["image_path"]

    # Without If-Match: the avatar exists.
    assert_error(await _post(app_client, user, V3_CARD), 409, "avatar_exists")
    # A stale one: 412 with the current ETag, nothing changed.
    stale = await _post(app_client, user, V3_CARD, **{"If-Match": '"7"'})
    assert_error(stale, 412, "precondition_failed")
    assert stale.headers["etag"] == '"1"'
    stale_png = await _post(app_client, user, png_card(ccv3=V3_CARD), **{"If-Match": '"7"'})
    assert_error(stale_png, 412, "precondition_failed")
    assert (await _card(app_client, user)).json()["data"]["name"] == "Seraphina"
    assert await _files(app_state, user) == [f"{image_path}/128.webp", f"{image_path}/512.webp"]

    # The right one: a new version with the card's persona; a JSON card has no image, so
    # the avatar keeps its own.
    response = await _post(app_client, user, V3_CARD, **{"If-Match": '"1"'})
    assert response.status_code == 200, response.text
    avatar = response.json()
    assert (avatar["name"], avatar["personality"], avatar["version"]) == ("Kael", "witty", 2)
    assert avatar["image_path"] == image_path and response.headers["etag"] == '"2"'
    history = await owner.fetch(
        "select version, name from public.avatar_history where user_id = $1 order by version", user.id
    )
    assert [(r["version"], r["name"]) for r in history] == [(1, "Seraphina"), (2, "Kael")]

    # A PNG card brings its image: the old one is removed once the new version committed.
    another = image_bytes("PNG", (64, 64))
    response = await _post(app_client, user, png_card(picture=another, chara=V2_CARD), **{"If-Match": "*"})
    assert response.status_code == 200, response.text
    new_path = response.json()["image_path"]
    assert new_path != image_path
    assert await _files(app_state, user) == [f"{new_path}/128.webp", f"{new_path}/512.webp"]


async def test_if_match_without_an_avatar_is_404(app_client: httpx.AsyncClient, user: User) -> None:
    for body in (V2_CARD, png_card(chara=V2_CARD)):
        assert_error(await _post(app_client, user, body, **{"If-Match": '"1"'}), 404, "avatar_not_found")
    assert_error(await app_client.get(URL, headers=user.headers), 404, "avatar_not_found")


async def test_a_card_image_counts_against_the_upload_rate(
    app_client: httpx.AsyncClient, app_state: AppState, owner: asyncpg.Connection, user: User
) -> None:
    await away_from_minute_boundary(margin_s=5)
    await owner.execute("select avatar_chat.configure_image_upload_rate(1)")
    try:
        assert (await _post(app_client, user, png_card(chara=V2_CARD))).status_code == 201
        refused = await _post(app_client, user, png_card(chara=V3_CARD), **{"If-Match": '"1"'})
        assert_error(refused, 429, "image_rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        # A JSON card brings no image: not counted, not refused.
        assert (await _post(app_client, user, V3_CARD, **{"If-Match": '"1"'})).status_code == 200
    finally:
        await owner.execute("select avatar_chat.configure_image_upload_rate(0)")
    assert len(await _files(app_state, user)) == 2


# --- the mapping -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"personality": "Sarcastic and clever, with a dry humour"}, "witty"),
        ({"personality": "warm, but formal and precise at work"}, "professional"),  # 2 against 1
        ({"personality": "gentle; playful"}, "caring"),  # a tie: the one named first
        ({"personality": "a mystery", "tags": ["Playful", "cat"]}, "playful"),
        ({"tags": ["noir"], "description": "A stoic, disciplined detective."}, "professional"),
        ({"description": "She is kind-hearted and sweet."}, "caring"),
        ({"description": "A wizard.", "tags": ["magic"]}, "friendly"),  # nothing found
        ({"personality": "witty", "extensions": {"avatar_chat": {"personality": "caring"}}}, "caring"),
        ({"personality": "witty", "extensions": {"avatar_chat": {"personality": "grumpy"}}}, "witty"),
        ({"personality": "uncaring and unfriendly"}, "friendly"),  # whole words only
    ],
)
def test_the_personality_keywords(data: dict[str, Any], expected: str) -> None:
    assert personality_of({"name": "X", **data}) == PersonalityType(expected)


def test_the_keywords_are_the_documented_ones() -> None:
    api = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    documented = dict(re.findall(r"^  \| `(\w+)` \| ([^|]+) \|$", api, re.MULTILINE))
    assert documented == {p.value: ", ".join(words) for p, words in KEYWORDS.items()}


def test_the_backstory_joins_description_and_personality() -> None:
    witty = PersonalityType.witty
    assert backstory_of("  A jester. ", " sarcastic ", witty) == "A jester.\n\nPersonality: sarcastic"
    assert backstory_of("", "sarcastic", witty) == "Personality: sarcastic"
    assert backstory_of("A jester.", "", witty) == "A jester."
    # What this API writes for the avatar's own personality is not added again.
    assert backstory_of("A jester.", persona_line(witty), witty) == "A jester."


async def test_a_backstory_over_the_limit_is_refused_not_cut(
    app_client: httpx.AsyncClient, user: User
) -> None:
    card = copy.deepcopy(V2_CARD)
    card["data"]["description"] = "x" * 3980
    response = await _post(app_client, user, card)
    assert_error(response, 422, "card_backstory_too_long")
    assert response.json()["error"]["details"] == {
        "length": 3980 + 2 + 13 + len(card["data"]["personality"]),
        "limit": 4000,
    }
    card["data"]["personality"] = ""
    assert (await _post(app_client, user, card)).status_code == 201


async def test_the_card_is_bounded_in_the_database_not_versioned_and_private(
    app_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    conn: asyncpg.Connection,
    user: User,
    other_user: User,
) -> None:
    assert (await _post(app_client, user, V2_CARD)).status_code == 201
    kept = json.loads(
        await owner.fetchval("select card::text from public.avatars where user_id = $1", user.id)
    )
    assert kept["data"]["first_mes"] == V2_CARD["data"]["first_mes"] and "name" not in kept["data"]
    # Written in the dashboard: a card must be an object of at most 2 MiB.
    for value, code in (([1, 2], "card_invalid"), ({"data": "x" * (2 * 2**20)}, "card_too_large")):
        with pytest.raises(asyncpg.PostgresError) as raised:
            await owner.execute(
                "update public.avatars set card = $2::jsonb where user_id = $1", user.id, json.dumps(value)
            )
        assert (raised.value.sqlstate, getattr(raised.value, "hint", None)) == ("AC422", code)
    # A persona switch leaves the card alone; history records the persona, never the card.
    await app_client.patch("/avatars/me/persona", json={"personality": "witty"}, headers=user.headers)
    again = json.loads(
        await owner.fetchval("select card::text from public.avatars where user_id = $1", user.id)
    )
    assert again == kept
    columns = await owner.fetch(
        "select column_name from information_schema.columns"
        " where table_schema = 'public' and table_name = 'avatar_history'"
    )
    assert "card" not in {r["column_name"] for r in columns}
    # Another user sees none of it through the Data API, and cannot write it.
    async with as_role(conn, "authenticated", claims_of(other_user)):
        assert await conn.fetch("select card from public.avatars") == []
        assert (
            await conn.execute("update public.avatars set card = '{}' where user_id = $1", user.id)
            == "UPDATE 0"
        )
    # The user may, within the same bounds (what the Data API lets them do with their row).
    async with as_role(conn, "authenticated", claims_of(user)):
        assert (
            await conn.execute("update public.avatars set card = '{}' where user_id = $1", user.id)
            == "UPDATE 1"
        )
    async with as_role(conn, "anon"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select card from public.avatars")
    # The card's functions take claims: no API role may call them (or anyone could act as anyone).
    for call in (
        "select avatar_chat.begin_my_card_image('{}', false, null)",
        "select * from avatar_chat.write_my_avatar_card('{}', false, 'x', 'friendly', '', null, null, null)",
    ):
        for role in ("anon", "authenticated"):
            async with as_role(conn, role, claims_of(user)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(call)


# --- bad input -----------------------------------------------------------------------------------


def _card_with(**data: Any) -> dict[str, Any]:
    card = copy.deepcopy(V2_CARD)
    card["data"].update(data)
    return card


def _v3_with_icon(uri: str) -> dict[str, Any]:
    return {
        **V3_CARD,
        "data": {**V3_CARD["data"], "assets": [{"type": "icon", "uri": uri, "name": "main", "ext": "png"}]},
    }


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


_NOT_JSON = [
    (b'{"spec": "chara_card_v2", "data": {"name": "A"}', "card_malformed"),
    (b"\xff\xfe{}", "card_malformed"),
    (b'{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": NaN}}', "card_malformed"),
    (b"[" * 100_000 + b"]" * 100_000, "card_malformed"),
    (b'{"spec": "chara_card_v2", "data": {"name": "A\\ud800"}}', "card_invalid"),
    (b'{"spec": "chara_card_v2", "data": {"name": "A", "x": 1e999}}', "card_invalid"),
]
_WRONG_CARDS: list[tuple[Any, str]] = [
    ([], "card_unsupported_spec"),
    ("chara", "card_unsupported_spec"),
    ({"name": "V1 card", "description": "top-level fields, no spec"}, "card_unsupported_spec"),
    ({**V2_CARD, "spec": "chara_card_v4"}, "card_unsupported_spec"),
    ({**V2_CARD, "spec": ["chara_card_v2"]}, "card_unsupported_spec"),
    ({**V2_CARD, "spec_version": "3.0"}, "card_unsupported_spec"),
    ({**V2_CARD, "spec_version": 2.0}, "card_unsupported_spec"),
    ({"spec": "chara_card_v2", "spec_version": "2.0"}, "card_invalid"),
    ({"spec": "chara_card_v2", "spec_version": "2.0", "data": "Ava"}, "card_invalid"),
    ({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"description": "no name"}}, "card_invalid"),
    (_card_with(name="   "), "card_invalid"),
    (_card_with(name="x" * 81), "card_invalid"),
    (_card_with(name=None), "card_invalid"),
    (_card_with(tags="fantasy, guardian"), "card_invalid"),
    (_card_with(alternate_greetings=[1, 2]), "card_invalid"),
    (_card_with(extensions=[]), "card_invalid"),
    (_card_with(description=5), "card_invalid"),
    (_card_with(scenario="A\u0000B"), "card_invalid"),
    (_card_with(extensions={"deep": _nested(40)}), "card_invalid"),
    ({**V3_CARD, "data": {**V3_CARD["data"], "assets": [{"type": "icon"}]}}, "card_invalid"),
    (_v3_with_icon("data:image/png;base64,@@"), "card_invalid"),
    (_v3_with_icon("data:text/html,<b>hi</b>"), "card_invalid"),
    (_card_with(description="x" * 4001, personality=""), "card_backstory_too_long"),
]


def _text(card: dict[str, Any]) -> bytes:
    """A tEXt chunk `chara` with this card."""
    return chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(card).encode()))


def _undecodable_pixels() -> bytes:
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _text(V2_CARD) + chunk(b"IDAT", b"garbage") + chunk(b"IEND", b"")


def _ztxt() -> bytes:
    return with_chunk(image_bytes("PNG", (8, 8)), chunk(b"zTXt", b"chara\0\0" + zlib.compress(b"e30=")))


def _bad_crc() -> bytes:
    return with_chunk(image_bytes("PNG", (8, 8)), chunk(b"tEXt", b"chara\0e30=", crc=1))


def _past_the_end() -> bytes:
    return png_card(chara=V2_CARD)[:33] + struct.pack(">I", 2**30) + b"IDAT" + b"\0" * 64


# case, the body (made when the test runs), status, code
_BAD_PNGS: list[tuple[str, Callable[[], bytes], int, str]] = [
    ("no card chunk", lambda: image_bytes("PNG", (64, 64)), 422, "card_not_found"),
    ("only other text", lambda: png_card(Comment={"spec": "chara_card_v2"}), 422, "card_not_found"),
    ("a zTXt chara is not read", _ztxt, 422, "card_not_found"),
    ("not base64", lambda: png_card(chara=b"not base64!"), 422, "card_undecodable"),
    ("base64, not JSON", lambda: png_card(chara=base64.b64encode(b"{nope")), 422, "card_undecodable"),
    ("base64, not UTF-8", lambda: png_card(chara=base64.b64encode(b"\xff\xfe")), 422, "card_undecodable"),
    ("a bad CRC", _bad_crc, 422, "card_undecodable"),
    ("JSON, not a card", lambda: png_card(chara=base64.b64encode(b'{"a": 1}')), 422, "card_unsupported_spec"),
    ("a name too long", lambda: png_card(chara=_card_with(name="x" * 81)), 422, "card_invalid"),
    (
        "a card of more than 1 MiB",
        lambda: png_card(chara=_card_with(first_mes="x" * CARD_MAX_BYTES)),
        422,
        "card_too_large",
    ),
    ("cut short", lambda: png_card(chara=V2_CARD)[:-30], 422, "image_undecodable"),
    ("a chunk past the end", _past_the_end, 422, "image_undecodable"),
    ("pixels that do not decode", _undecodable_pixels, 422, "image_undecodable"),
    (
        "too many pixels",
        lambda: with_chunk(image_bytes("PNG", (6000, 6000), "L"), _text(V2_CARD)),
        422,
        "image_too_many_pixels",
    ),
]


async def _nothing_written(client: httpx.AsyncClient, app_state: AppState, user: User) -> None:
    assert_error(await client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")
    assert await _files(app_state, user) == []


async def test_json_that_is_not_a_card_is_refused(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    for body, code in _NOT_JSON:
        assert_error(await _post(app_client, user, body, **JSON), 422, code)
    for card, code in _WRONG_CARDS:
        response = await app_client.post(URL, content=json.dumps(card), headers={**user.headers, **JSON})
        assert_error(response, 422, code)
        if code == "card_invalid":
            assert response.json()["error"]["details"][0]["loc"][0] in {"data", "spec_version"}, response.text
    await _nothing_written(app_client, app_state, user)


@pytest.mark.parametrize(("case", "body", "status", "code"), _BAD_PNGS, ids=[case[0] for case in _BAD_PNGS])
async def test_a_png_that_is_not_a_card_is_refused(
    app_client: httpx.AsyncClient,
    app_state: AppState,
    user: User,
    case: str,
    body: Callable[[], bytes],
    status: int,
    code: str,
) -> None:
    assert_error(await _post(app_client, user, body(), **{"Content-Type": "image/png"}), status, code)
    await _nothing_written(app_client, app_state, user)


async def test_bodies_of_the_wrong_type_or_size(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "image/jpeg", ""):
        response = await _post(
            app_client, user, json.dumps(V2_CARD).encode(), **{"Content-Type": content_type}
        )
        assert_error(response, 415, "unsupported_card_type")
    assert_error(
        await _post(app_client, user, b"{}", **{"Content-Type": "image/png"}), 422, "image_undecodable"
    )
    # application/*+json is JSON; a PNG is read as a PNG whatever it is called.
    vendor = await _post(
        app_client, user, json.dumps(V2_CARD).encode(), **{"Content-Type": "application/vnd.card+json"}
    )
    assert vendor.status_code == 201, vendor.text
    await app_client.delete("/avatars/me", headers=user.headers)
    png = await _post(
        app_client, user, png_card(chara=V2_CARD), **{"Content-Type": "application/octet-stream"}
    )
    assert png.status_code == 201, png.text
    await app_client.delete("/avatars/me", headers=user.headers)
    await app_state.tasks.drain(5)
    # Over 1 MiB of JSON; a PNG over AVATAR_IMAGE_MAX_BYTES (5 MiB), by its length or as it streams.
    big = json.dumps(_card_with(first_mes="x" * CARD_MAX_BYTES)).encode()
    assert_error(await _post(app_client, user, big, **JSON), 413, "payload_too_large")
    huge = png_card(chara=V2_CARD) + b"\0" * (5 * 2**20)

    async def chunks() -> AsyncIterator[bytes]:
        yield huge[: len(huge) // 2]
        yield huge[len(huge) // 2 :]

    assert_error(await _post(app_client, user, huge), 413, "payload_too_large")
    streamed = await app_client.post(
        URL, content=chunks(), headers={**user.headers, "Content-Type": "image/png"}
    )
    assert_error(streamed, 413, "payload_too_large")
    await _nothing_written(app_client, app_state, user)


async def test_a_bad_format_and_no_token(app_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(app_client, user)
    assert_error(
        await app_client.get(URL, params={"format": "gif"}, headers=user.headers), 422, "validation_failed"
    )
    assert (await app_client.get(URL)).status_code == 401
    assert (await app_client.post(URL, json=V2_CARD)).status_code == 401


async def test_a_stored_image_that_does_not_decode_gives_the_placeholder(
    app_client: httpx.AsyncClient, app_state: AppState, user: User
) -> None:
    await create_avatar(app_client, user, name="Ava")
    placeholder = (await _card(app_client, user, format="png")).content
    response = await app_client.put("/avatars/me/image", content=image_bytes(), headers=user.headers)
    folder = response.json()["image_path"]
    store = app_state.images
    assert isinstance(store, LocalObjectStore)
    # Damaged in storage (a disk fault, a hand edit): the card still goes out.
    store.file_of(f"{folder}/512.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 damaged")
    damaged = await _card(app_client, user, format="png")
    assert decoded(damaged.content).tobytes() == decoded(placeholder).tobytes()
    assert card_in(damaged.content, "chara")["data"]["name"] == "Ava"


# --- Supabase Storage -----------------------------------------------------------------------------


async def test_the_png_of_an_image_in_supabase_storage(
    settings: Settings, owner: asyncpg.Connection, user: User
) -> None:
    async with on_supabase(settings, owner) as supabase:
        me = supabase.signed_in(user)
        avatar = await supabase.with_image(me)
        response = await supabase.client.get(URL, params={"format": "png"}, headers=me.headers)
        assert response.status_code == 200, response.text
        pixel = decoded(response.content).convert("RGB").getpixel((256, 256))
        assert _near(pixel, RED, tolerance=20)  # type: ignore[arg-type]  # JPEG, then WebP
        (download,) = supabase.fake.calls("download")
        assert download.path == f"/storage/v1/object/avatars/{avatar['image_path']}/512.webp"
        supabase.assert_service_role(download)
        # Its files gone from Storage: 404 image_not_found, as GET /avatars/me/image says.
        supabase.fake.objects.clear()
        missing = await supabase.client.get(URL, params={"format": "png"}, headers=me.headers)
        assert_error(missing, 404, "image_not_found")
