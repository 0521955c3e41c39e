"""Account routes."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from avatar_chat.accounts.dependencies import Accounts
from avatar_chat.auth.dependencies import CurrentUser
from avatar_chat.core.errors import AUTHENTICATED_ERRORS, responses

router = APIRouter(tags=["account"])


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTHENTICATED_ERRORS),
    summary="Delete my account and everything in it",
    description="Removes the user's avatar images from Storage, then the user (through Supabase "
    "Auth), which deletes their avatar, history, conversations and messages. The token stops working "
    "at once on every route but this one (401 user_not_found); repeating this answers 204 again. "
    "A 503 (storage_unavailable, auth_unavailable) may leave part done: retry to finish.",
    operation_id="deleteMyAccount",
)
async def delete_account(user: CurrentUser, accounts: Accounts) -> Response:
    await accounts.delete(user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
