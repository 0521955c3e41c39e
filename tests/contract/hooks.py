"""Schemathesis hooks for this API: ./scripts/api-contract, and `schemathesis run` in the
checkout's root (schemathesis.toml names them).

Each phase (examples, coverage, fuzzing, stateful) runs as a live user of its own, made for
it with an avatar; each `DELETE /me` case gets a user of its own too, so deleting an
account never leaves the rest of the run answering 401. Users come from AVATAR_CHAT_TOKEN_COMMAND, a shell
command that prints an access token for the user whose email is in $AVATAR_CHAT_EMAIL
(created if needed), or else from the server's development sign-in (`POST
/app/dev/sign-in`, served only on the embedded default in development): users.py. See
docs/api-contract.md. Importing this module registers the auth provider with schemathesis
for the whole process: only schemathesis loads it (schemathesis.toml)."""

from __future__ import annotations

import os
from typing import Any, TypeAlias

import schemathesis
from schemathesis import AuthContext, Case

from tests.contract.users import ready_user_token

AnyCase: TypeAlias = Case[Any]
DELETE_ACCOUNT = "DELETE /me"
# A phase's user is made again after this many seconds (tokens expire; 10 min by default).
REFRESH_S = int(os.environ.get("AVATAR_CHAT_TOKEN_REFRESH_S", "600"))


def _user_of(case: AnyCase, context: AuthContext) -> str:
    """Whose token a case carries: its own user for an account deletion, else its phase's."""
    if context.operation.label == DELETE_ACCOUNT:
        return f"deleted:{case.id}"
    meta: Any = case.meta
    return meta.phase.name.value if meta is not None else "default"


@schemathesis.auth(refresh_interval=REFRESH_S, cache_by_key=_user_of)
class LiveUser:
    def get(self, case: AnyCase, context: AuthContext) -> str:
        base_url = os.environ.get("AVATAR_CHAT_URL") or context.operation.schema.get_base_url()
        return ready_user_token(base_url, os.environ.get("AVATAR_CHAT_TOKEN_COMMAND"))

    def set(self, case: AnyCase, data: str, context: AuthContext) -> None:
        case.headers["Authorization"] = f"Bearer {data}"
