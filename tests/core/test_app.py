"""The app serves each domain's routes as its own, exactly as include_router would."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from avatar_chat.core.openapi import describe_error_codes
from avatar_chat.core.settings import Settings
from avatar_chat.main import ROUTERS, create_app


def test_routes_are_flat_and_the_openapi_schema_is_what_include_router_gives(settings: Settings) -> None:
    app = create_app(settings)
    reference = FastAPI(
        title=app.title, version=app.version, summary=app.summary, lifespan=None, openapi_url="/openapi.json"
    )
    for router in ROUTERS:
        reference.include_router(router)
    ours = [r for r in app.routes if isinstance(r, APIRoute)]
    assert [(r.path, r.methods) for r in ours] == [
        (r.path, r.methods) for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)
    ]
    assert not any(type(r).__name__ == "_IncludedRouter" for r in app.routes)
    # Both with each error response's codes (main.py adds them to FastAPI's schema).
    expected = reference.openapi()
    describe_error_codes(expected)
    assert app.openapi()["paths"] == expected["paths"]
    assert app.openapi()["components"] == expected["components"]
