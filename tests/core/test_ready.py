"""/ready says whether this worker can serve: database reachable, schema version current."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.ops.migrate import default_migrations_dir, discover, migrate
from avatar_chat.state import AppState
from tests.support.assertions import assert_error
from tests.support.databases import fresh_database


async def test_ready_when_the_database_has_this_builds_schema(
    app_client: httpx.AsyncClient, app_state: AppState
) -> None:
    assert app_state.schema_version == discover(default_migrations_dir())[-1].version
    assert (await app_client.get("/ready")).json() == {"status": "ready"}


async def test_ready_is_503_on_a_database_behind_this_build(
    database_url: str, settings: Settings, tmp_path: Path
) -> None:
    older = tmp_path / "migrations"
    older.mkdir()
    for migration in discover(default_migrations_dir())[:-1]:
        shutil.copy(migration.path, older)
    async with fresh_database(database_url) as dsn:
        await migrate(dsn, older)  # a database the previous release migrated
        app = create_app(settings.model_copy(update={"database_url": SecretStr(dsn)}))
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client,
        ):
            response = await client.get("/ready")
            assert_error(response, 503, "schema_outdated")
            assert response.headers["Retry-After"] == "30"
            await migrate(dsn)
            assert (await client.get("/ready")).json() == {"status": "ready"}
