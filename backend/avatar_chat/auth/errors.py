"""The 401 answers of token verification: one stable code each, with a message people can act on."""

from __future__ import annotations

from typing import Final

from avatar_chat.core.errors import Unauthorized

MESSAGES: Final[dict[str, str]] = {
    "missing_token": "No access token was sent.",
    "token_too_large": "The access token is too large.",
    "malformed_token": "The access token is not a well-formed JWT.",
    "unsupported_algorithm": ("The access token is signed with an algorithm this server does not accept."),
    "invalid_signature": "The access token signature is invalid.",
    "token_expired": "The access token has expired; refresh the session.",
    "token_not_yet_valid": "The access token is not valid yet; check the client clock.",
    "invalid_audience": "The access token was issued for another audience.",
    "invalid_issuer": "The access token was issued by another project or server.",
    "invalid_claims": "The access token does not carry a valid user session.",
    "not_a_user_token": (
        "This is a Supabase API key (anon/publishable or service_role/secret), not a user session; "
        "sign the user in and send their access token."
    ),
    "unknown_key": "The access token is signed with a key this project does not publish.",
}


def unauthorized(code: str) -> Unauthorized:
    return Unauthorized(MESSAGES[code], code=code)
