"""Mint Supabase-shaped HS256 access tokens for local development and tests."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

DEFAULT_ISSUER = "avatar-chat-local"


def mint_access_token(
    secret: str,
    *,
    user_id: uuid.UUID,
    email: str | None,
    ttl_s: int = 3600,
    issuer: str | None = None,
    audience: str = "authenticated",
    extra: dict[str, Any] | None = None,
) -> str:
    """An access token with the claim set Supabase Auth issues for a password sign-in.

    A negative `ttl_s` yields an already-expired token; `extra` overrides or adds claims.
    """
    iat = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer or DEFAULT_ISSUER,
        "sub": str(user_id),
        "aud": audience,
        "exp": iat + ttl_s,
        "iat": iat,
        "email": email or "",  # Supabase sends "" rather than null for phone-only users
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": iat}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})
