"""The served OpenAPI schema as a contract client generators and fuzzers can rely on."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatar_chat.avatars.service import decode_history_cursor
from avatar_chat.chat.events import parse_event_id
from avatar_chat.conversations.service import decode_cursor
from avatar_chat.core.errors import ERROR_CODES, BadRequest
from avatar_chat.storage.base import check_path
from tests.support.factories import User, create_avatar, create_conversation
from tests.support.images import image_bytes

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HTTP_METHODS = {m.lower() for m in METHODS} | {"trace"}


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _concrete(path: str) -> str:
    """A URL of the path template (405 is answered before any parameter is validated)."""
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_unsupported_method_gets_405_allowing_every_method_of_the_path(
    schema: dict[str, Any], app_client: httpx.AsyncClient
) -> None:
    """RFC 9110 15.5.6: a 405's Allow lists the resource's methods, not one route's."""
    checked = 0
    for path, item in schema["paths"].items():
        supported = {m.upper() for m in item if m in HTTP_METHODS}
        for method in METHODS:
            if method in supported:
                continue
            response = await app_client.request(method, _concrete(path))
            assert response.status_code == 405, (method, path, response.status_code)
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert allow == supported, (method, path, response.headers["allow"])
            if method != "HEAD":
                assert response.json()["error"]["code"] == "method_not_allowed"
            checked += 1
    assert checked > 50


# The opaque strings a client sends back: the schema says exactly what the code takes
# (a value valid by the schema is never refused, a value refused is never valid by it).


def _parameter_schema(schema: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    (parameter,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name]
    found: dict[str, Any] = parameter["schema"]
    strings: list[dict[str, Any]] = [s for s in found.get("anyOf", [found]) if s.get("type") == "string"]
    assert len(strings) == 1, found
    return strings[0]


def _valid(string_schema: dict[str, Any], value: str) -> bool:
    """Whether `value` is valid by a string schema (pattern as ECMA's: search, not match)."""
    return (
        string_schema.get("minLength", 0) <= len(value) <= string_schema.get("maxLength", 10**9)
        and re.search(string_schema["pattern"], value) is not None
        and not value.endswith("\n")  # ECMA's $ is the very end; Python's also before a last \n
    )


def _accepted(decode: Callable[[str], object], value: str) -> bool:
    try:
        decode(value)
    except BadRequest:
        return False
    return True


_TRICKY = [
    "",
    "0",
    "00",
    "01",
    "1",
    "9" * 16,
    "9" * 17,
    "\u00b2",
    "\u0661",
    "1\n",
    " 1",
    "1:2",
    "1:",
    ":1",
    "1:\u00b2",
    "12:345",
    "a",
    "a/b",
    "a//b",
    "/a",
    "a/",
    ".",
    "..",
    "a/../b",
    "./a",
    "a/.b",
    ".a",
    "-a",
    "_",
    "a" * 128,
    "a" * 129,
    "/".join(["a"] * 8),
    "/".join(["a"] * 9),
    "a b",
    "a\u00e9",
    "0_00000000-0000-4000-8000-000000000000",
    "1733600000000000_0f8fad5b-d9cb-469f-a165-70867728950e",
    "1733600000000000_0F8FAD5B-D9CB-469F-A165-70867728950E",
    "99999999999999999_0f8fad5b-d9cb-469f-a165-70867728950e",
    "999999999999999999_0f8fad5b-d9cb-469f-a165-70867728950e",
    "1733600000000000-0f8fad5b-d9cb-469f-a165-70867728950e",
    "MjAyNi0xMi0wN1QxODowMDowMCswMDowMHww",
]


def _decoders() -> dict[tuple[str, str], Callable[[str], object]]:
    return {
        ("/conversations", "cursor"): decode_cursor,
        ("/avatars/me/history", "cursor"): decode_history_cursor,
        (STREAM, "Last-Event-ID"): parse_event_id,
        (SIGNED, "path"): check_path,
    }


STREAM = "/conversations/{conversation_id}/messages/{message_id}/stream"
SIGNED = "/storage/v1/object/sign/{bucket}/{path}"


@pytest.mark.parametrize("where", list(_decoders()), ids=lambda w: f"{w[0]} {w[1]}")
def test_the_schema_of_an_opaque_string_is_exactly_what_the_code_takes(
    schema: dict[str, Any], where: tuple[str, str]
) -> None:
    path, name = where
    decode = _decoders()[where]
    string_schema = _parameter_schema(schema, path, name)
    pattern = re.compile(string_schema["pattern"])

    for value in _TRICKY:
        assert _valid(string_schema, value) == _accepted(decode, value), (path, name, value)

    @given(
        st.one_of(
            st.from_regex(pattern),
            st.text(alphabet="0123456789abcdef:_-/.Z\u00b2 ", max_size=60),
        )
    )
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    def agree(value: str) -> None:
        if len(value) <= string_schema.get("maxLength", 10**9):  # longer: FastAPI's 422
            assert _valid(string_schema, value) == _accepted(decode, value), (path, name, value)

    agree()


async def test_the_schema_takes_the_cursors_event_ids_and_object_paths_the_api_gives(
    schema: dict[str, Any], app_client: httpx.AsyncClient, user: User
) -> None:
    avatar = await create_avatar(app_client, user)
    for name in ("Bea", "Cy"):
        headers = {**user.headers, "If-Match": f'"{avatar["version"]}"'}
        response = await app_client.patch("/avatars/me", json={"name": name}, headers=headers)
        assert response.status_code == 200, response.text
        avatar = response.json()
    page = (await app_client.get("/avatars/me/history?limit=1", headers=user.headers)).json()
    assert _valid(_parameter_schema(schema, "/avatars/me/history", "cursor"), page["next_cursor"])
    second = await app_client.get(
        "/avatars/me/history", params={"limit": 1, "cursor": page["next_cursor"]}, headers=user.headers
    )
    assert second.status_code == 200, second.text

    conversation = await create_conversation(app_client, user)
    await create_conversation(app_client, user)
    page = (await app_client.get("/conversations?limit=1", headers=user.headers)).json()
    assert _valid(_parameter_schema(schema, "/conversations", "cursor"), page["next_cursor"])
    second = await app_client.get(
        "/conversations", params={"limit": 1, "cursor": page["next_cursor"]}, headers=user.headers
    )
    assert second.status_code == 200, second.text
    assert [c["id"] for c in second.json()["items"]] == [conversation["id"]]

    reply = await app_client.post(
        f"/conversations/{conversation['id']}/messages",
        json={"content": "Hello"},
        headers={**user.headers, "Accept": "text/event-stream"},
    )
    assert reply.status_code == 201, reply.text
    ids = [line.removeprefix("id: ") for line in reply.text.splitlines() if line.startswith("id: ")]
    assert ids
    for event in ids:
        assert _valid(_parameter_schema(schema, STREAM, "Last-Event-ID"), event), event
    done = reply.text.split("event: done\ndata: ", 1)[1]
    reply_id = re.match(r'\{"id":"([^"]+)"', done)
    assert reply_id is not None
    resumed = await app_client.get(
        f"/conversations/{conversation['id']}/messages/{reply_id[1]}/stream",
        headers={**user.headers, "Accept": "text/event-stream", "Last-Event-ID": ids[1]},
    )
    assert resumed.status_code == 200, resumed.text

    response = await app_client.put("/avatars/me/image", content=image_bytes(), headers=user.headers)
    assert response.status_code == 200, response.text
    urls = (await app_client.get("/avatars/me/image", headers=user.headers)).json()["urls"]
    for url in urls.values():
        object_path = urlsplit(url).path.split("/storage/v1/object/sign/avatars/", 1)[1]
        assert _valid(_parameter_schema(schema, SIGNED, "path"), object_path), url
        assert (await app_client.get(urlsplit(url).path + "?" + urlsplit(url).query)).status_code == 200


async def test_a_signed_url_without_its_token_is_a_400(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/storage/v1/object/sign/avatars/a/b/512.webp")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_signature"


DOMAINS = {"chat", "conversations", "avatars", "account", "storage", "health"}
PUBLIC_OPERATIONS = {"getSignedObject", "getHealth", "getReadiness"}


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def test_every_operation_has_a_method_name_a_summary_a_description_a_domain(schema: dict[str, Any]) -> None:
    """What a client generator names its methods and groups them by (issue #23)."""
    ids = []
    for method, path, op in _operations(schema):
        where = f"{method} {path}"
        operation_id = op.get("operationId", "")
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id), (where, operation_id)
        ids.append(operation_id)
        assert op.get("summary", "").strip(), where
        assert op.get("description", "").strip(), where
        assert op.get("tags") and len(op["tags"]) == 1 and op["tags"][0] in DOMAINS, (where, op.get("tags"))
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert {tag["name"] for tag in schema["tags"]} == DOMAINS
    assert all(tag["description"] for tag in schema["tags"])
    assert {"getMyAvatar", "sendMessage", "switchPersona", "listConversations"} <= set(ids)


def test_every_error_response_is_documented_in_the_one_error_shape(schema: dict[str, Any]) -> None:
    error_ref = "#/components/schemas/ErrorResponse"
    for method, path, op in _operations(schema):
        where = f"{method} {path}"
        statuses = set(op["responses"])
        assert any(s.startswith("2") for s in statuses), where
        if op["operationId"] not in PUBLIC_OPERATIONS:
            # A bearer token is checked (401, 403), any parameter or body validated (422),
            # and the database may be busy (503).
            assert {"401", "403", "422", "503"} <= statuses, (where, sorted(statuses))
        for status, response in op["responses"].items():
            assert response.get("description", "").strip(), (where, status)
            if int(status) < 400 or (status == "422" and "ErrorResponse" not in str(response)):
                continue
            assert response["content"]["application/json"]["schema"]["$ref"] == error_ref, (where, status)


def _body_schema(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    ref = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    found: dict[str, Any] = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def test_a_patch_body_says_which_fields_may_be_null_and_that_one_is_needed(schema: dict[str, Any]) -> None:
    """A PATCH field left out is unchanged, so its default None is no value a client may send:
    only the fields that clear something (a conversation's title) take null."""
    for path, nullable in (("/avatars/me", set()), ("/conversations/{conversation_id}", {"title"})):
        body = _body_schema(schema, path, "patch")
        assert body["minProperties"] == 1
        for name, prop in body["properties"].items():
            takes_null = {"type": "null"} in prop.get("anyOf", [])
            assert takes_null == (name in nullable), (path, name, prop)
            assert "default" not in prop or name in nullable, (path, name, prop)


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("Rae", "Rae"),
        ("  Rae\t", "Rae"),
        ("   ", None),
        ("\x1c", "\x1c"),
        ("\u3000Rae\u00a0", "Rae"),
        ("\ufeff\u2028", None),
        ("a" * 80, "a" * 80),
        (" " + "a" * 80, None),
    ],
)
async def test_a_name_is_taken_exactly_when_its_schema_says_so(
    schema: dict[str, Any], app_client: httpx.AsyncClient, user: User, name: str, accepted: str | None
) -> None:
    """Outer whitespace is dropped, but the length counts as sent and a name must hold a
    character other than whitespace: the schema's maxLength and pattern say exactly that,
    whitespace being what a JSON Schema pattern's is (ECMA-262: not \\x1c, but \\ufeff)."""
    prop = _body_schema(schema, "/avatars/me", "post")["properties"]["name"]
    valid = len(name) <= prop["maxLength"] and re.search(prop["pattern"], name) is not None
    assert valid == (accepted is not None)
    response = await app_client.post("/avatars/me", json={"name": name}, headers=user.headers)
    if accepted is None:
        assert response.status_code == 422, response.text
    else:
        assert (response.status_code, response.json()["name"]) == (201, accepted)


BACKEND = Path(__file__).resolve().parents[2] / "backend" / "avatar_chat"
SCHEMAS = Path(__file__).resolve().parents[2] / "supabase" / "schemas"


def _codes_raised() -> set[str]:
    """Every error code the code raises that a grep can see: `code="..."` and card errors in
    Python, `errcode = 'ACnnn', hint = '...'` in SQL."""
    python = "\n".join(p.read_text() for p in BACKEND.rglob("*.py"))
    sql = "\n".join(p.read_text() for p in SCHEMAS.glob("*.sql"))
    found = set(re.findall(r'\bcode="([a-z_]+)"', python))
    found |= set(re.findall(r'card_error\(\s*"([a-z_]+)"', python))
    found |= set(re.findall(r"errcode = 'AC\d{3}', hint = '([a-z_]+)'", sql))
    return found


def test_every_error_response_names_the_codes_it_may_carry(schema: dict[str, Any]) -> None:
    """A generated client can switch on `error.code`: each error response of each operation
    lists its codes (description and `x-error-codes`), each a code the API has, of that
    status; and every code the code raises is in the registry those come from."""
    assert _codes_raised() <= set(ERROR_CODES), _codes_raised() - set(ERROR_CODES)
    listed = 0
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                codes = response["x-error-codes"]
                assert codes, (method, path, status)
                assert all(ERROR_CODES[c] == int(status) for c in codes), (method, path, status, codes)
                assert response["description"].endswith(f"Codes: {', '.join(f'`{c}`' for c in codes)}.")
                listed += 1
    assert listed > 150
    send = schema["paths"]["/conversations/{conversation_id}/messages"]["post"]["responses"]
    assert set(send["429"]["x-error-codes"]) == {"rate_limited", "too_many_streams", "quota_exceeded"}
    assert send["401"]["x-error-codes"] == ["missing_token", "unauthorized", "user_not_found"]
