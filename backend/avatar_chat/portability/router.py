"""GET /me/export (and, with it, POST /me/import)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.core.errors import AUTHENTICATED_ERRORS, TooManyRequests, responses
from avatar_chat.portability.dependencies import Portability

router = APIRouter(tags=["account"])

_ZIP = "application/zip"


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
    "while this server makes EXPORTS_PER_WORKER others. See docs/portability.md.",
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
