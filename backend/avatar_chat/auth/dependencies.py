"""`CurrentUser`: the verified claims of the request's bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from avatar_chat.auth.verifier import MAX_TOKEN_CHARS, TokenVerifier
from avatar_chat.core.claims import Claims
from avatar_chat.core.errors import Unauthorized

# auto_error=False: a missing token must get our error shape and WWW-Authenticate.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SupabaseAccessToken",
    description=(
        f"A Supabase Auth access token (the session's access_token), at most {MAX_TOKEN_CHARS} characters."
    ),
)


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None:
        raise Unauthorized("Send Authorization: Bearer <Supabase access token>.", code="missing_token")
    verifier: TokenVerifier = request.state.verifier
    return await verifier.verify(credentials.credentials)


CurrentUser = Annotated[Claims, Depends(current_user)]
