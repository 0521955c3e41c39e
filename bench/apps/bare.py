"""The API without its outermost layer, for `bench.scenarios.observability`: no request ids, no
access log, no request metrics, no /metrics; run with METRICS_ENABLED=false, so nothing
else records metrics either. Everything else is the API as `avatar-chat serve` runs it
(`avatar_chat.main.create_app`, settings from the environment). Served by

    uvicorn bench.apps.bare:app   (with the API's server settings: uvloop, httptools, workers)
"""

from __future__ import annotations

import functools

from fastapi import FastAPI

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app


def create_bare_app() -> FastAPI:
    settings = Settings()
    if settings.metrics_enabled:
        raise RuntimeError("bench.apps.bare measures the API without metrics: set METRICS_ENABLED=false")
    app = create_app(settings)
    # The stack FastAPI itself builds, without the RequestObserver around it.
    app.build_middleware_stack = functools.partial(FastAPI.build_middleware_stack, app)  # type: ignore[method-assign]
    return app


app = create_bare_app()
