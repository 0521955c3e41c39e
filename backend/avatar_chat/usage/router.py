"""GET /me/usage."""

from __future__ import annotations

from fastapi import APIRouter

from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.core.dependencies import DB
from avatar_chat.core.errors import AUTHENTICATED_ERRORS, responses
from avatar_chat.usage import repository
from avatar_chat.usage.schemas import UsageRead

router = APIRouter(tags=["account"])


@router.get(
    "/me/usage",
    response_model=UsageRead,
    responses=responses(*AUTHENTICATED_ERRORS),
    summary="What I spent today and this month, against my plan",
    description="Today's and this month's model calls and tokens (replies and summaries count "
    "toward the token quotas; moderation is listed apart), the plan's limits (null: none) and "
    "when each window resets, in the user's time zone; per model and kind. Read from the "
    "database at every call, so a plan changed in the dashboard shows at once. Over a quota, "
    "a send answers 429 quota_exceeded (see docs/usage.md).",
    operation_id="getMyUsage",
)
async def my_usage(user: CurrentUser, db: DB) -> dict[str, object]:
    return await repository.my_usage(db, user)
