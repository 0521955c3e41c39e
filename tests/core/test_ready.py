"""/ready says whether this worker can serve: database, schema version, listener."""

from __future__ import annotations

import httpx

from avatar_chat.core.migrate import default_migrations_dir, discover
from avatar_chat.core.state import AppState


async def test_ready_checks_the_schema_this_build_expects(
    app_client: httpx.AsyncClient, app_state: AppState
) -> None:
    assert app_state.schema_version == discover(default_migrations_dir())[-1].version
    assert (await app_client.get("/ready")).json() == {"status": "ready"}
    shipped = app_state.schema_version
    app_state.schema_version = "99991231235959"  # a build newer than its database
    try:
        response = await app_client.get("/ready")
    finally:
        app_state.schema_version = shipped
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "schema_outdated"
    assert response.headers["Retry-After"] == "30"
    assert (await app_client.get("/ready")).status_code == 200
