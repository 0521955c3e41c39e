"""CORS at the HTTP level: preflights and answers for listed origins (errors too, and SSE),
nothing for other origins or with none configured; what the settings refuse. The same
from a real browser on a second origin: tests/web/test_browser.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError

from avatar_chat.core.cors import ALLOWED_HEADERS, EXPOSED_HEADERS
from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from tests.support.factories import User, create_avatar, create_conversation

LISTED = "https://app.example.com"
OTHER = "https://evil.example.net"


async def _unexpected_failure() -> None:
    raise RuntimeError("a bug")


@pytest.fixture(scope="module")
async def cors_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"cors_allow_origins": (LISTED, "http://localhost:5173")}))
    # A route with a bug, so that Starlette's ServerErrorMiddleware answers 500.
    app.add_api_route("/test-only/unexpected-failure", _unexpected_failure)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def _preflight(method: str, headers: str, origin: str = LISTED) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def _listed(response: httpx.Response, origin: str = LISTED) -> None:
    assert response.headers.get("access-control-allow-origin") == origin, response.headers
    assert "access-control-allow-credentials" not in response.headers
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {h.lower() for h in EXPOSED_HEADERS} <= exposed
    assert "origin" in response.headers.get("vary", "").lower()


async def test_a_preflight_from_a_listed_origin_allows_every_header_the_api_reads(
    cors_client: httpx.AsyncClient,
) -> None:
    asked = ", ".join(h.lower() for h in ALLOWED_HEADERS)
    for method, path in (
        ("POST", "/conversations/00000000-0000-4000-8000-000000000000/messages"),
        ("PATCH", "/avatars/me/persona"),
        ("PUT", "/avatars/me/image"),
        ("DELETE", "/avatars/me"),
        ("GET", "/conversations/00000000-0000-4000-8000-000000000000/messages/x/stream"),
    ):
        response = await cors_client.options(path, headers=_preflight(method, asked))
        assert response.status_code == 200, (method, path, response.text)
        assert response.headers["access-control-allow-origin"] == LISTED
        assert method in response.headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
        assert {h.lower() for h in ALLOWED_HEADERS} <= allowed
        assert int(response.headers["access-control-max-age"]) > 0


async def test_answers_to_a_listed_origin_carry_cors_headers_errors_and_streams_too(
    cors_client: httpx.AsyncClient, user: User
) -> None:
    origin = {"Origin": LISTED}
    created = await cors_client.post("/avatars/me", json={"name": "Ava"}, headers={**user.headers, **origin})
    assert created.status_code == 201
    _listed(created)
    # Errors: decided by the token check, by a route, and by the body limit (a middleware).
    _listed(await cors_client.get("/avatars/me", headers=origin))  # 401
    stale = await cors_client.patch(
        "/avatars/me/persona",
        json={"personality": "witty"},
        headers={**user.headers, **origin, "If-Match": '"99"'},
    )
    assert stale.status_code == 412
    _listed(stale)
    too_large = await cors_client.post(
        "/conversations", content=b"x" * 70_000, headers={**user.headers, **origin}
    )
    assert too_large.status_code == 413
    _listed(too_large)
    unexpected = await cors_client.get("/test-only/unexpected-failure", headers=origin)
    assert unexpected.status_code == 500 and unexpected.json()["error"]["code"] == "internal_error"
    _listed(unexpected)
    # An SSE send from the second origin.
    conversation = await create_conversation(cors_client, user)
    async with cors_client.stream(
        "POST",
        f"/conversations/{conversation['id']}/messages",
        json={"content": "hi"},
        headers={**user.headers, **origin, "Accept": "text/event-stream", "Idempotency-Key": "k1"},
    ) as stream:
        assert stream.status_code == 201
        assert stream.headers["content-type"].startswith("text/event-stream")
        _listed(stream)
        await stream.aread()
    # Idempotent-Replayed is readable on a retry.
    replay = await cors_client.post(
        f"/conversations/{conversation['id']}/messages",
        json={"content": "hi"},
        headers={**user.headers, **origin, "Idempotency-Key": "k1"},
    )
    assert replay.headers["idempotent-replayed"] == "true"
    _listed(replay)
    # Another listed origin gets its own origin back, never the list.
    _listed(
        await cors_client.get("/health", headers={"Origin": "http://localhost:5173"}), "http://localhost:5173"
    )


async def test_an_origin_not_listed_gets_no_cors_headers(cors_client: httpx.AsyncClient, user: User) -> None:
    await create_avatar(cors_client, user)
    preflight = await cors_client.options(
        "/avatars/me/persona", headers=_preflight("PATCH", "authorization, content-type", origin=OTHER)
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    answer = await cors_client.get("/avatars/me", headers={**user.headers, "Origin": OTHER})
    assert answer.status_code == 200  # the browser, not the server, keeps it from the page
    assert "access-control-allow-origin" not in answer.headers


async def test_with_no_origins_configured_there_is_no_cors_at_all(app_client: httpx.AsyncClient) -> None:
    preflight = await app_client.options("/avatars/me", headers=_preflight("GET", "authorization"))
    assert preflight.status_code == 405
    answer = await app_client.get("/health", headers={"Origin": LISTED})
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    assert not any(name.startswith("access-control-") for name in answer.headers)


async def test_credentials_are_allowed_only_when_asked(settings: Settings) -> None:
    app = create_app(
        settings.model_copy(update={"cors_allow_origins": (LISTED,), "cors_allow_credentials": True})
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health", headers={"Origin": LISTED})
    assert response.headers["access-control-allow-origin"] == LISTED
    assert response.headers["access-control-allow-credentials"] == "true"


def test_settings_read_exact_origins_and_refuse_the_rest() -> None:
    ok = Settings(
        _env_file=None,
        cors_allow_origins="https://App.Example.com, http://localhost:5173,https://app.example.com:443",
    )
    assert ok.cors_allow_origins == ("https://app.example.com", "http://localhost:5173")
    assert Settings(_env_file=None).cors_allow_origins == ()
    assert Settings(_env_file=None, cors_allow_origins="*").cors_allow_origins == ("*",)
    for bad in (
        "https://app.example.com/",
        "https://app.example.com/path",
        "app.example.com",
        "https://*.example.com",
        "ftp://example.com",
        "https://user@example.com",
        "https://example.com:99999",
        "https://example.com?x",
    ):
        with pytest.raises(ValidationError, match="not an origin"):
            Settings(_env_file=None, cors_allow_origins=bad)
    with pytest.raises(ValidationError, match="CORS_ALLOW_CREDENTIALS"):
        Settings(_env_file=None, cors_allow_origins="*", cors_allow_credentials=True)
