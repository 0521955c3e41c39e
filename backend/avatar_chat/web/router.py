"""/app: the web client's files, /app/config.json and POST /app/dev/sign-in. Not part of
the API's schema: a client of its own, on the documented API like any other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from avatar_chat.core.errors import Forbidden, NotFound, UnsupportedMediaType
from avatar_chat.core.settings import Settings
from avatar_chat.web.dependencies import Web
from avatar_chat.web.schemas import DevSession, DevSignInRequest

PREFIX: Final = "/app"
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
VENDOR_DIR: Final = STATIC_DIR / "vendor"
# Files under vendor/ carry their version in their path: they never change.
_IMMUTABLE: Final = "public, max-age=31536000, immutable"
# The client's own files keep their names across releases: revalidated (ETag) every time.
_REVALIDATE: Final = "no-cache"


def _security_headers(settings: Settings) -> dict[str, str]:
    """Scripts and styles only from here; calls to here and to the Supabase project (its
    HTTP and Realtime URLs, also a local `supabase start` on http); images from signed
    URLs (here, or Supabase Storage)."""
    project = ""
    if settings.supabase_url:
        origin = settings.supabase_url.rstrip("/")
        project = f" {origin} {origin.replace('https://', 'wss://').replace('http://', 'ws://')}"
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https:"
        f"{project}; connect-src 'self'{project}; frame-ancestors 'none'; base-uri 'self'; "
        "form-action 'self'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


router = APIRouter(prefix=PREFIX, tags=["web client"], include_in_schema=False)


@router.get("/config.json")
async def client_config(web: Web) -> Response:
    return Response(web.config_json, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post("/dev/sign-in")
async def dev_sign_in(request: Request, web: Web) -> DevSession:
    """Local development only (embedded database, APP_ENV=development, no Supabase
    settings): a token for any email, its user created if needed. Everywhere else this
    answers as an unknown path does, whatever the body. JSON only: a cross-site form can
    post text/plain without a CORS preflight, never application/json."""
    dev = web.dev_sign_in
    if dev is None:
        raise NotFound("Not Found")
    if not dev.answers_for(request.headers.get("host")):
        raise Forbidden(
            "The dev sign-in answers only on localhost, an IP address or the server's HOST.",
            code="host_not_allowed",
        )
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("Send the sign-in as application/json.")
    try:
        body = DevSignInRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    return await dev.sign_in(body.email)


class ClientFiles(StaticFiles):
    """The static files (read in a worker thread, as StaticFiles does), with caching
    and security headers."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(directory=STATIC_DIR, html=True)
        self._headers = _security_headers(settings)

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        vendored = os.fspath(full_path).startswith(os.fspath(VENDOR_DIR) + os.sep)
        response.headers["Cache-Control"] = _IMMUTABLE if vendored else _REVALIDATE
        response.headers.update(self._headers)
        return response
