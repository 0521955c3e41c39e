"""The web client's routes, in-process: its files and their caching, config.json in each
configuration, and the dev sign-in, which exists only on the embedded database in
development and answers every other configuration exactly as an unknown path does."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from avatar_chat.core.runtime import EMBEDDED_HANDOFF_ENV, prepare
from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.web.router import STATIC_DIR
from tests.helpers import assert_error

SIGN_IN = "/app/dev/sign-in"


@asynccontextmanager
async def client_for(settings: Settings, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update=overrides))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def embedded_dev(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A worker of `avatar-chat serve` on the embedded database, as serve starts it: the
    resolved DATABASE_URL, and the same address in the handoff variable."""
    monkeypatch.setenv(EMBEDDED_HANDOFF_ENV, database_url)
    async with client_for(settings) as client:
        yield client


def _email() -> str:
    return f"web-{uuid.uuid4().hex[:12]}@example.test"


# --- files ---------------------------------------------------------------------------------------


async def test_app_redirects_to_the_index_which_is_revalidated(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/app")
    assert response.status_code == 307 and response.headers["location"].endswith("/app/")
    index = await app_client.get("/app/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["x-content-type-options"] == "nosniff"
    again = await app_client.get("/app/", headers={"If-None-Match": index.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


async def test_every_file_is_served_with_its_type_and_vendored_ones_are_cached_for_good(
    app_client: httpx.AsyncClient,
) -> None:
    files = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())
    assert {"index.html", "app.js", "api.js", "auth.js", "app.css"} <= set(files)
    types = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
    for name in files:
        response = await app_client.get(f"/app/{name}")
        assert response.status_code == 200, name
        expected = types.get(Path(name).suffix)
        if expected:  # a module script with another type is refused by browsers
            assert response.headers["content-type"].startswith(expected), (name, response.headers)
        vendored = name.startswith("vendor/")
        cache = "public, max-age=31536000, immutable" if vendored else "no-cache"
        assert response.headers["cache-control"] == cache, name


async def test_unknown_files_and_escapes_are_404_in_the_error_shape(app_client: httpx.AsyncClient) -> None:
    assert_error(await app_client.get("/app/nope.js"), 404, "not_found")
    assert_error(await app_client.get("/app/..%2F..%2Fmain.py"), 404, "not_found")
    response = await app_client.post("/app/app.js")
    assert response.status_code == 405


def test_the_client_loads_nothing_from_elsewhere_and_its_imports_exist() -> None:
    """No CDN at run time: every src/href/import is relative, and names a shipped file."""
    for path in STATIC_DIR.glob("*.*"):
        text = path.read_text()
        for ref in re.findall(r'(?:src|href)="([^"]+)"', text) + re.findall(r'from "([^"]+)"', text):
            if ref.startswith(("#", "data:")):
                continue
            assert not re.match(r"^[a-z]+:|^//", ref), f"{path.name} loads {ref} from elsewhere"
            assert (STATIC_DIR / ref).resolve().is_file(), f"{path.name} refers to missing {ref}"


# --- config.json ------------------------------------------------------------------------------------


async def test_config_without_sign_in_configured(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/app/config.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"mode": "none", "supabase_url": None, "supabase_anon_key": None}


async def test_config_names_the_supabase_project_and_its_anon_key(settings: Settings) -> None:
    async with client_for(
        settings, supabase_url="https://abcd.supabase.co/", supabase_anon_key="sb_publishable_abc"
    ) as client:
        response = await client.get("/app/config.json")
        assert response.json() == {
            "mode": "supabase",
            "supabase_url": "https://abcd.supabase.co",
            "supabase_anon_key": "sb_publishable_abc",
        }
        # The page may talk to the project (Auth over https, Realtime over wss), nowhere else.
        csp = (await client.get("/app/")).headers["content-security-policy"]
        assert "connect-src 'self' https://abcd.supabase.co wss://abcd.supabase.co;" in csp
        # The server-side keys are never part of it.
        assert "service" not in response.text


async def test_config_on_the_embedded_database_in_development(embedded_dev: httpx.AsyncClient) -> None:
    response = await embedded_dev.get("/app/config.json")
    assert response.json() == {"mode": "dev", "supabase_url": None, "supabase_anon_key": None}


# --- dev sign-in ------------------------------------------------------------------------------------


async def test_dev_sign_in_creates_the_user_once_and_its_token_works(
    embedded_dev: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    email = _email()
    response = await embedded_dev.post(SIGN_IN, json={"email": f"  {email.upper()} "})
    assert response.status_code == 200, response.text
    session = response.json()
    assert session["token_type"] == "bearer" and session["user"]["email"] == email
    assert session["expires_in"] > 3600
    user_id = uuid.UUID(session["user"]["id"])
    assert await owner.fetchval("select email from auth.users where id = $1", user_id) == email
    headers = {"Authorization": f"Bearer {session['access_token']}"}
    # The token is a user session: the API knows the user (no avatar yet).
    assert_error(await embedded_dev.get("/avatars/me", headers=headers), 404, "avatar_not_found")
    # Signing in again, also several times at once, is the same user.
    again = await asyncio.gather(*(embedded_dev.post(SIGN_IN, json={"email": email}) for _ in range(5)))
    assert {r.json()["user"]["id"] for r in again} == {str(user_id)}
    assert await owner.fetchval("select count(*) from auth.users where lower(email) = $1", email) == 1


async def test_dev_sign_in_refuses_bad_input_with_422(embedded_dev: httpx.AsyncClient) -> None:
    for body in (b"", b"{", b'{"email": "no-at-sign"}', b'{"email": "a@b", "extra": 1}', b"\xff"):
        assert_error(await embedded_dev.post(SIGN_IN, content=body), 422, "validation_failed")


async def test_dev_sign_in_is_404_on_a_configured_database(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    """The session's app reaches the test database through DATABASE_URL, as a deployment
    does: no sign-in, whatever is sent, and the answer is that of a path that does not exist."""

    def answer(response: httpx.Response) -> tuple[int, str, str]:
        error = response.json()["error"]
        return response.status_code, error["code"], error["message"]

    unknown = answer(await app_client.post("/no/such/path", json={"email": "a@b.c"}))
    assert unknown[:2] == (404, "not_found")
    email = _email()
    for body in ({"email": email}, {"bad": True}):
        assert answer(await app_client.post(SIGN_IN, json=body)) == unknown
    assert answer(await app_client.post(SIGN_IN, content=b"\xff")) == unknown
    assert await owner.fetchval("select count(*) from auth.users where email = $1", email) == 0


async def test_dev_sign_in_is_404_on_the_embedded_database_in_production(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EMBEDDED_HANDOFF_ENV, database_url)
    async with client_for(settings, app_env="production") as client:
        assert_error(await client.post(SIGN_IN, json={"email": _email()}), 404, "not_found")
        assert (await client.get("/app/config.json")).json()["mode"] == "none"


async def test_only_the_address_serve_handed_over_counts_as_embedded(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not (await prepare(settings, migrate_now=False)).embedded_database
    monkeypatch.setenv(EMBEDDED_HANDOFF_ENV, database_url + "&other=1")
    assert not (await prepare(settings, migrate_now=False)).embedded_database
    monkeypatch.setenv(EMBEDDED_HANDOFF_ENV, database_url)
    assert (await prepare(settings, migrate_now=False)).embedded_database
