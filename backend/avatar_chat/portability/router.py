"""GET /me/export and POST /me/import."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.core.errors import (
    AUTHENTICATED_ERRORS,
    BODY_ERRORS,
    TooManyRequests,
    UnsupportedMediaType,
    responses,
)
from avatar_chat.portability.dependencies import Portability
from avatar_chat.portability.schemas import ImportResult

router = APIRouter(tags=["account"])

_ZIP = "application/zip"
IMPORT_PATH = "/me/import"


@router.get(
    "/me/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {_ZIP: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The archive.",
        },
        **responses(*AUTHENTICATED_ERRORS, TooManyRequests),
    },
    summary="Export all my data as one archive",
    description="A zip streamed as it is read from one consistent snapshot: README.md, export.json, "
    "avatar.json (with every version), avatar.webp, conversations/<id>.json (every message, variant, "
    "notice and what it cost), usage.json and the JSON Schema of each file (schemas/). One export per "
    "user at a time (429 export_in_progress) and EXPORTS_PER_DAY a day (429 export_limited); 503 busy "
    "while this server makes EXPORTS_PER_WORKER others. See docs/portability.md. "
    "429 `export_in_progress`, `export_limited`.",
    operation_id="exportMyData",
)
async def export_my_data(user: CurrentUser, portability: Portability) -> StreamingResponse:
    chunks = await portability.export(user)
    name = f"avatar-chat-export-{datetime.now(UTC):%Y%m%d-%H%M%S}.zip"
    return StreamingResponse(
        chunks,
        media_type=_ZIP,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.post(
    IMPORT_PATH,
    response_model=ImportResult,
    status_code=201,
    responses={
        200: {"model": ImportResult, "description": "This archive was imported before: nothing changed."},
        **responses(*AUTHENTICATED_ERRORS, *BODY_ERRORS, UnsupportedMediaType),
    },
    summary="Import an archive of my data",
    description="The body is an archive GET /me/export made (here or on another deployment), "
    "`Content-Type: application/zip`, at most IMPORT_MAX_BYTES. Its conversations and messages get new "
    "ids, keeping their order, variants, statuses and times; the avatar and its history are imported "
    "when the account has none, or replace the account's with `?avatar=replace`. All of it or "
    "nothing, in one transaction; the same archive again answers 200 with what its import did. "
    "422 archive_unsafe / archive_invalid / archive_version_unsupported (nothing changed). "
    "See docs/portability.md. "
    "Codes: 422 `archive_invalid`, `archive_unsafe`, `archive_version_unsupported`, `validation_failed`.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The archive itself.",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in (_ZIP, "application/octet-stream")
            },
        }
    },
    operation_id="importMyData",
)
async def import_my_data(
    user: CurrentUser,
    portability: Portability,
    request: Request,
    response: Response,
    avatar: Annotated[
        Literal["keep", "replace"], Query(description="replace: the archive's avatar replaces mine.")
    ] = "keep",
) -> ImportResult:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (_ZIP, "application/x-zip-compressed", "application/octet-stream"):
        raise UnsupportedMediaType("Send the archive as application/zip.", code="unsupported_media_type")
    data = await request.body()
    result = await portability.import_archive(user, data, replace_avatar=avatar == "replace")
    if result.already_imported:
        response.status_code = 200
    return result
