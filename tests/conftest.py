"""A real Postgres for the whole run, built by the real migrations.

The embedded server in a temporary folder, or `TEST_DATABASE_URL` when set (CI with a
service container, or a local Supabase: `supabase start` prints its URL). Tests never
share a user: each makes its own, so they need no cleanup and can run in any order.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.ops.embedded import EmbeddedPostgres
from avatar_chat.ops.migrate import migrate
from avatar_chat.state import AppState
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.factories import TEST_JWT_SECRET, User, create_user
from tests.support.fake_llm import serve_fake_llm
from tests.support.pooler import PgBouncer

# Major-independent tests that take long, run once, each in the run of tests/runners/majors.py
# that has the time to spare: marker -> the variable majors.py sets to `here` in that run and
# `elsewhere` in the others.
ROUTED: dict[str, str] = {"browser": "TEST_BROWSER_TESTS", "outside": "TEST_OUTSIDE_TESTS"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With TEST_ONLY_DATABASE_TESTS (tests/runners/majors.py, on another PostgreSQL major):
    only the tests that use the database under test; the others do not depend on it, and
    nor do those marked `same_on_every_major` (they run on the embedded server).

    ROUTED (variables set by tests/runners/majors.py, which runs the majors at the same
    time): `elsewhere` leaves out the tests with that marker, `here` takes them in (whatever
    the rules above say): they depend on no major (Chromium, or schemathesis from outside,
    against servers of their own), so they run once, in the run with time to spare."""
    only_database = bool(os.environ.get("TEST_ONLY_DATABASE_TESTS"))
    routes = {marker: os.environ.get(variable, "") for marker, variable in ROUTED.items()}
    if not only_database and "elsewhere" not in routes.values():
        return

    def kept(item: pytest.Item) -> bool:
        for marker, where in routes.items():
            if item.get_closest_marker(marker) is not None and where:
                return where == "here"
        if not only_database:
            return True
        return (
            "database_url" in getattr(item, "fixturenames", ())
            and item.get_closest_marker("same_on_every_major") is None
        )

    keep = [item for item in items if kept(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture(scope="session")
def embedded_postgres(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("data"), stop_on_exit=False)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
async def database_url(embedded_postgres: EmbeddedPostgres | None) -> str:
    dsn = os.environ.get("TEST_DATABASE_URL") or (embedded_postgres.dsn if embedded_postgres else "")
    await migrate(dsn)
    return dsn


@pytest.fixture(scope="session")
async def pgbouncer(database_url: str) -> AsyncIterator[PgBouncer]:
    """A transaction-mode pooler in front of the test database (as Supavisor on 6543)."""
    pooler = PgBouncer(database_url)
    await pooler.start()
    yield pooler
    await pooler.stop()


@pytest.fixture(scope="module", params=["direct", "transaction_pooler"])
def connect_to(request: pytest.FixtureRequest, database_url: str) -> dict[str, str]:
    """The environment by which a test's `avatar-chat serve` reaches the database: directly,
    or through pgbouncer in transaction mode (consecutive transactions of one client
    connection then run on different server connections). Tests using it run twice."""
    if request.param == "direct":
        return {"DATABASE_URL": database_url}
    pooler: PgBouncer = request.getfixturevalue("pgbouncer")
    return {"DATABASE_URL": pooler.dsn, "DB_POOL_MODE": "transaction"}


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        _env_file=None,
        database_url=SecretStr(database_url),
        supabase_jwt_secret=SecretStr(TEST_JWT_SECRET),
        migrate_on_start=False,
        offline_llm_chunk_delay_ms=0,
        # Limits live in the shared database; tests of them set their own.
        rate_limit_sends_per_minute=0,
        max_concurrent_streams=0,
        rate_limit_image_uploads_per_minute=0,
        # Notices add messages to every conversation; tests of them (tests/safety) turn them on.
        safety_disclosure_notice="",
        data_dir=tmp_path_factory.mktemp("unused-data"),
    )


@pytest.fixture(scope="session")
async def owner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the table owner: the Supabase dashboard's SQL editor."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to run statements as an API role (`as_role`) as
    PostgREST does; closed at the end."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        app.state.asgi = manager.app  # the app with its lifespan state attached
        yield app


@pytest.fixture(scope="session")
def app_state(app: FastAPI) -> AppState:
    state: AppState = app.state.resources
    return state


@pytest.fixture(scope="session")
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.state.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def user(owner: asyncpg.Connection) -> User:
    return await create_user(owner)


@pytest.fixture
async def other_user(owner: asyncpg.Connection) -> User:
    return await create_user(owner)


# The fake OpenAI-compatible LLM server, one for the session (tests/chat's session-scoped
# `llm_client` uses it); a module that wants one of its own overrides `fake_llm` with a
# module-scoped fixture (tests/support/fake_llm.py), and `fake` then resets that one.
fake_llm = pytest.fixture(scope="session")(serve_fake_llm)


@pytest.fixture
def fake(fake_llm: FakeOpenAIServer) -> FakeOpenAIServer:
    """The fake LLM server as a test finds it: reset (scenario `ok`, no requests)."""
    fake_llm.reset()
    return fake_llm


@pytest.fixture
def remote() -> Iterator[respx.MockRouter]:
    """Remote moderation providers faked with respx: only the routes a test adds; the fake
    LLM (127.0.0.1) and in-process apps (http://test) go through."""
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        router.route(host="test").pass_through()
        yield router
