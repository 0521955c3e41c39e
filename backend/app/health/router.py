"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.core.errors import ServiceUnavailable, responses
from app.core.state import State

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/health", summary="The process is up")
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", responses=responses(ServiceUnavailable), summary="Database and listener reachable")
async def ready(state: State) -> Health:
    await state.db.ping()
    if not state.listener.connected:
        raise ServiceUnavailable("The invalidation listener is reconnecting.", code="listener_disconnected")
    return Health(status="ready")
