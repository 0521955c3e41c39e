"""Objects of the local store, served at Supabase Storage's URL shape (signed URLs only).
With Supabase Storage configured these answer 404: Storage serves its own URLs."""

from __future__ import annotations

import asyncio
import time
from stat import S_ISREG
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse

from avatar_chat.core.errors import BadRequest, NotFound, ValidationFailed, responses
from avatar_chat.storage.base import OBJECT_PATH_PATTERN, check_path
from avatar_chat.storage.dependencies import Images
from avatar_chat.storage.local import LocalObjectStore

router = APIRouter(prefix="/storage/v1", tags=["storage"])

_MEDIA_TYPES = {"webp": "image/webp"}
TOKEN_MAX = 2048


def _object_not_found() -> NotFound:
    return NotFound("No such object.", code="object_not_found")


@router.get(
    "/object/sign/{bucket}/{path:path}",
    response_class=FileResponse,
    responses={
        **responses(BadRequest, NotFound, ValidationFailed),
        200: {
            "description": "The object.",
            "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}},
        },
    },
    summary="An object of the local store, by signed URL (GET /avatars/me/image makes them)",
    # `token` is read by the route: without one the answer is 400, as Supabase Storage's.
    openapi_extra={
        "parameters": [
            {
                "name": "token",
                "in": "query",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": TOKEN_MAX},
                "description": "The signed URL's token.",
            }
        ]
    },
    operation_id="getSignedObject",
)
async def signed_object(
    bucket: Annotated[str, Path(max_length=63)],
    path: Annotated[
        str,
        Path(
            max_length=1024,
            description="The object's name: folders and a file of letters, digits, `.`, `_` and `-`.",
            json_schema_extra={"pattern": OBJECT_PATH_PATTERN},
        ),
    ],
    store: Images,
    request: Request,
) -> FileResponse:
    """Serves an object of the local store (the embedded default) for a signed URL that GET
    /avatars/me/image made: 400 `invalid_signature` (no token, a bad one, or one for another
    object), `signature_expired` or `invalid_object_path`; 404 `object_not_found` (also with
    Supabase Storage configured, which serves its own URLs)."""
    token = request.query_params.get("token")
    if not token or len(token) > TOKEN_MAX:
        raise BadRequest("A signed URL needs its token (up to 2048 characters).", code="invalid_signature")
    if not isinstance(store, LocalObjectStore):
        raise _object_not_found()
    file, expires_at = store.verify(bucket, check_path(path), token)
    try:
        stat_result = await asyncio.to_thread(file.stat)
    except OSError:
        raise _object_not_found() from None
    if not S_ISREG(stat_result.st_mode):
        raise _object_not_found()
    media_type = _MEDIA_TYPES.get(file.suffix.removeprefix("."), "application/octet-stream")
    # Objects never change (a new image gets new names): the URL's lifetime is the limit.
    max_age = max(0, expires_at - int(time.time()))
    headers = {"Cache-Control": f"private, max-age={max_age}"}
    return FileResponse(file, media_type=media_type, headers=headers, stat_result=stat_result)
