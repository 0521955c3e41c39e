"""`CurrentUser`: the verified claims of the request's bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from avatar_chat.auth.verifier import MAX_TOKEN_CHARS, TokenVerifier
from avatar_chat.core.claims import Claims
from avatar_chat.core.errors import Unauthorized


class SupabaseBearer(HTTPBearer):
    """The bearer scheme in OpenAPI, and the verification itself: one dependency per
    request (not a credentials dependency plus a verifying one), since every route has it."""

    async def __call__(self, request: Request) -> Claims:  # type: ignore[override]
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if not token or scheme.lower() != "bearer":
            # Our error shape and WWW-Authenticate, not HTTPBearer's own 403/401.
            raise Unauthorized("Send Authorization: Bearer <Supabase access token>.", code="missing_token")
        verifier: TokenVerifier = request.state.verifier
        return await verifier.verify(token)


current_user = SupabaseBearer(
    auto_error=False,
    scheme_name="SupabaseAccessToken",
    description=(
        f"A Supabase Auth access token (the session's access_token), at most {MAX_TOKEN_CHARS} characters."
    ),
)

CurrentUser = Annotated[Claims, Depends(current_user)]
