"""The web client's routes, in-process: its files and their caching, config.json in each
configuration, and the dev sign-in, which exists only on the embedded database in
development and answers every other configuration exactly as an unknown path does."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.ops.runtime import EMBEDDED_HANDOFF_ENV, prepare
from avatar_chat.web.router import STATIC_DIR
from tests.support.apps import own_app
from tests.support.assertions import assert_error
from tests.support.factories import TEST_JWT_SECRET
from tests.support.servers import ServerProcess

SIGN_IN = "/app/dev/sign-in"


@asynccontextmanager
async def client_for(
    settings: Settings, base_url: str = "http://test", **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    async with own_app(settings, base_url=base_url, **overrides) as (client, _):
        yield client


@pytest.fixture
def dev_settings(
    settings: Settings, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """A worker of `avatar-chat serve` on the embedded default, as serve starts it: the
    resolved DATABASE_URL, and the same address in the handoff variable; no Supabase
    setting, the JWT secret generated in its data folder."""
    monkeypatch.setenv(EMBEDDED_HANDOFF_ENV, database_url)
    return settings.model_copy(update={"supabase_jwt_secret": None, "data_dir": tmp_path})


@pytest.fixture
async def embedded_dev(dev_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """That worker reached as http://localhost:8000, as ./scripts/run prints it."""
    async with client_for(dev_settings, base_url="http://localhost:8000") as client:
        yield client


async def _users_with_email(owner: asyncpg.Connection, email: str) -> int:
    count: int = await owner.fetchval("select count(*) from auth.users where email = $1", email)
    return count


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


# SAFETY_SUITABILITY_NOTICE's default, which the client shows before sign-in and in the chat.
SUITABILITY = Settings.model_fields["safety_suitability_notice"].default


async def test_config_without_sign_in_configured(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/app/config.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "mode": "none",
        "supabase_url": None,
        "supabase_anon_key": None,
        "suitability_notice": SUITABILITY,
    }


@pytest.mark.parametrize(
    ("setting", "shown"), [("", None), ("Not for children under 13.", "Not for children under 13.")]
)
async def test_config_carries_the_suitability_notice_null_when_empty(
    settings: Settings, setting: str, shown: str | None
) -> None:
    async with client_for(settings, safety_suitability_notice=setting) as client:
        assert (await client.get("/app/config.json")).json()["suitability_notice"] == shown


async def test_config_names_the_supabase_project_and_its_anon_key(settings: Settings) -> None:
    async with client_for(
        settings, supabase_url="https://abcd.supabase.co/", supabase_anon_key="sb_publishable_abc"
    ) as client:
        response = await client.get("/app/config.json")
        assert response.json() == {
            "mode": "supabase",
            "supabase_url": "https://abcd.supabase.co",
            "supabase_anon_key": "sb_publishable_abc",
            "suitability_notice": SUITABILITY,
        }
        # The page may talk to the project (Auth over https, Realtime over wss), nowhere else.
        csp = (await client.get("/app/")).headers["content-security-policy"]
        assert "connect-src 'self' https://abcd.supabase.co wss://abcd.supabase.co;" in csp
        # The server-side keys are never part of it.
        assert "service" not in response.text


async def test_config_on_the_embedded_database_in_development(embedded_dev: httpx.AsyncClient) -> None:
    response = await embedded_dev.get("/app/config.json")
    assert response.json() == {
        "mode": "dev",
        "supabase_url": None,
        "supabase_anon_key": None,
        "suitability_notice": SUITABILITY,
    }


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
    as_json = {"content-type": "application/json"}
    for body in (b"", b"{", b'{"email": "no-at-sign"}', b'{"email": "a@b", "extra": 1}', b"\xff"):
        response = await embedded_dev.post(SIGN_IN, content=body, headers=as_json)
        assert_error(response, 422, "validation_failed")


async def test_dev_sign_in_takes_json_only(
    embedded_dev: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    """A page on another site can post a form (text/plain, urlencoded, multipart) here with
    no CORS preflight; it cannot post application/json without one."""
    email = _email()
    body = json.dumps({"email": email}).encode()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = {"content-type": content_type} if content_type else {}
        response = await embedded_dev.post(SIGN_IN, content=body, headers=headers)
        assert_error(response, 415, "unsupported_media_type")
    assert await _users_with_email(owner, email) == 0
    json_utf8 = {"content-type": "Application/JSON; charset=utf-8"}
    assert (await embedded_dev.post(SIGN_IN, content=body, headers=json_utf8)).status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8000", True),
        ("app.localhost", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("192.168.1.20:8000", True),  # a phone on the LAN, by address
        ("attacker.example", False),  # DNS rebinding: a name of theirs pointed at 127.0.0.1
        ("attacker.example:8000", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
        ("[::1", False),
    ],
)
async def test_dev_sign_in_answers_only_for_the_hosts_the_server_was_started_for(
    embedded_dev: httpx.AsyncClient, owner: asyncpg.Connection, host: str, allowed: bool
) -> None:
    email = _email()
    response = await embedded_dev.post(SIGN_IN, json={"email": email}, headers={"host": host})
    if allowed:
        assert response.status_code == 200
    else:
        assert_error(response, 403, "host_not_allowed")
        assert await _users_with_email(owner, email) == 0


async def test_dev_sign_in_answers_for_the_name_given_as_host(dev_settings: Settings) -> None:
    async with client_for(dev_settings, base_url="http://devbox.lan:8000", host="devbox.lan") as client:
        assert (await client.post(SIGN_IN, json={"email": _email()})).status_code == 200
        evil = await client.post(SIGN_IN, json={"email": _email()}, headers={"host": "evil.example"})
        assert_error(evil, 403, "host_not_allowed")


@pytest.mark.parametrize(
    "supabase",
    [
        # The finding: a real project's legacy HS256 secret, its URL and anon key.
        {
            "supabase_url": "https://abcd.supabase.co",
            "supabase_anon_key": "sb_publishable_abc",
            "supabase_jwt_secret": SecretStr(TEST_JWT_SECRET),
        },
        {"supabase_jwt_secret": SecretStr(TEST_JWT_SECRET)},
        {"supabase_url": "https://abcd.supabase.co"},
        {"supabase_anon_key": "sb_publishable_abc"},
        {"supabase_url": "https://abcd.supabase.co", "supabase_service_role_key": SecretStr("sb_secret_x")},
    ],
    ids=["url+anon+secret", "secret", "url", "anon", "url+service"],
)
async def test_dev_sign_in_does_not_exist_with_any_supabase_setting(
    dev_settings: Settings, owner: asyncpg.Connection, supabase: dict[str, object]
) -> None:
    """Embedded database, APP_ENV=development, but a Supabase setting: the sign-in could sign
    with a real project's secret or name its issuer, so it is not there at all."""
    email = _email()
    async with client_for(dev_settings, base_url="http://localhost:8000", **supabase) as client:
        assert_error(await client.post(SIGN_IN, json={"email": email}), 404, "not_found")
        assert (await client.get("/app/config.json")).json()["mode"] != "dev"
    assert await _users_with_email(owner, email) == 0


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
    assert await _users_with_email(owner, email) == 0


async def test_dev_sign_in_is_404_on_the_embedded_database_in_production(dev_settings: Settings) -> None:
    async with client_for(dev_settings, base_url="http://localhost:8000", app_env="production") as client:
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


# --- as `avatar-chat serve` runs it ------------------------------------------------------------------


async def _serve_embedded(data_dir: Path, **env: str) -> ServerProcess:
    server = ServerProcess(
        database_url=None, jwt_secret=None, workers=2, env={"DATA_DIR": str(data_dir), **env}
    )
    await server.start(timeout_s=60)
    return server


@pytest.mark.slow
async def test_serve_on_the_embedded_default_signs_in_with_its_own_secret_only(tmp_path: Path) -> None:
    """Two workers on the embedded default: each reads the secret generated in the data
    folder (never handed over as SUPABASE_JWT_SECRET), so a dev token works on both; with
    the settings of a Supabase project on the same data folder, the sign-in is gone."""
    server = await _serve_embedded(tmp_path / "data")
    try:
        async with server.client() as client:
            assert (await client.get("/app/config.json")).json()["mode"] == "dev"
            session = await client.post(SIGN_IN, json={"email": _email()})
            assert session.status_code == 200
            headers = {"Authorization": f"Bearer {session.json()['access_token']}"}
            for _ in range(6):  # new connections: both workers answer
                assert_error(await client.get("/avatars/me", headers=headers), 404, "avatar_not_found")
            rebound = await client.post(SIGN_IN, json={"email": _email()}, headers={"host": "evil.example"})
            assert_error(rebound, 403, "host_not_allowed")
    finally:
        await server.stop()

    server = await _serve_embedded(
        tmp_path / "data",
        SUPABASE_URL="https://abcd.supabase.co",
        SUPABASE_ANON_KEY="sb_publishable_abc",
        SUPABASE_JWT_SECRET=TEST_JWT_SECRET,
    )
    try:
        async with server.client() as client:
            assert (await client.get("/app/config.json")).json()["mode"] == "supabase"
            for _ in range(4):
                victim = await client.post(SIGN_IN, json={"email": "victim@example.org"})
                assert_error(victim, 404, "not_found")
    finally:
        await server.stop()
