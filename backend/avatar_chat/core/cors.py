"""CORS for browser clients served from other origins (CORS_ALLOW_ORIGINS).

Every route takes `Authorization`, so a browser on another origin preflights every call:
the preflight is answered here, before any other middleware sees it, and every answer
(errors too) carries the CORS headers, so a client on another origin can read our error
body, `ETag` and `Retry-After`. With no origins configured nothing is installed at all.
"""

from __future__ import annotations

from typing import Final

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from avatar_chat.core.settings import Settings

ALLOWED_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
# What a client sends beyond the CORS-safelisted headers (Accept: text/event-stream is one).
ALLOWED_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "Idempotency-Key",
    "Last-Event-ID",
    "X-Request-ID",
)
# What a client reads beyond the safelisted response headers.
EXPOSED_HEADERS: Final = ("ETag", "Retry-After", "X-Request-ID", "Idempotent-Replayed", "WWW-Authenticate")
# How long a browser may reuse a preflight's answer (Chromium caps it at 2 h).
PREFLIGHT_MAX_AGE_S: Final = 600


def with_cors(app: ASGIApp, settings: Settings) -> ASGIApp:
    """`app` (the whole middleware stack, Starlette's ServerErrorMiddleware included, so
    that an unhandled error's 500 carries the headers too) behind CORS; `app` itself when
    no origin is configured."""
    if not settings.cors_allow_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(settings.cors_allow_origins),
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        max_age=PREFLIGHT_MAX_AGE_S,
    )
