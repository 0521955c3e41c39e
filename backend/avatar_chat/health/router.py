"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from avatar_chat.core.errors import ServiceUnavailable, responses
from avatar_chat.core.migrate import is_applied
from avatar_chat.core.state import State

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/health", summary="The process is up")
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", responses=responses(ServiceUnavailable), summary="Database, schema and listener ready")
async def ready(state: State) -> Health:
    if state.schema_version is None:
        await state.db.ping()
    else:
        async with state.db.connection() as conn:
            applied = await is_applied(conn, state.schema_version)
        if not applied:
            raise ServiceUnavailable(
                f"The database lacks migration {state.schema_version}: run `supabase db push`"
                " or `avatar-chat migrate`.",
                code="schema_outdated",
                retry_after_s=30,
            )
    if not state.listener.connected:
        raise ServiceUnavailable("The invalidation listener is reconnecting.", code="listener_disconnected")
    return Health(status="ready")
