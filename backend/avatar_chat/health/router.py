"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from avatar_chat.core.dependencies import DB
from avatar_chat.core.errors import ServiceUnavailable, responses
from avatar_chat.ops.migrate import is_applied

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/health", summary="The process is up", operation_id="getHealth")
async def health() -> Health:
    """Liveness: 200 as long as the process answers; nothing else is checked."""
    return Health(status="ok")


@router.get(
    "/ready",
    responses=responses(ServiceUnavailable),
    summary="Database reachable, schema current",
    operation_id="getReadiness",
)
async def ready(db: DB, request: Request) -> Health:
    """Readiness: 200 when the database answers and its schema is the one this version needs; 503
    otherwise (`schema_outdated` when migrations are missing)."""
    schema_version: str = request.state.schema_version
    async with db.connection() as conn:
        applied = await is_applied(conn, schema_version)
    if not applied:
        raise ServiceUnavailable(
            f"The database lacks migration {schema_version}:"
            " run `supabase db push` or `avatar-chat migrate`.",
            code="schema_outdated",
            retry_after_s=30,
        )
    return Health(status="ready")
