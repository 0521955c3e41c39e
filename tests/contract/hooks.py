"""Schemathesis hooks for this API: ./scripts/api-contract, and `schemathesis run` in the
checkout's root (schemathesis.toml names them).

Each phase (examples, coverage, fuzzing, stateful) runs as a live user of its own, made for
it with an avatar; each `DELETE /me` case gets a user of its own too, so deleting an account never leaves
the rest of the run answering 401. Users come from AVATAR_CHAT_TOKEN_COMMAND, a shell
command that prints an access token for the user whose email is in $AVATAR_CHAT_EMAIL
(created if needed), or else from the server's development sign-in (`POST
/app/dev/sign-in`, served only on the embedded default in development). See
docs/api-contract.md."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Any, TypeAlias

import httpx
import schemathesis
from schemathesis import AuthContext, Case

AnyCase: TypeAlias = Case[Any]
DELETE_ACCOUNT = "DELETE /me"
# A phase's user is made again after this many seconds (tokens expire; 10 min by default).
REFRESH_S = int(os.environ.get("AVATAR_CHAT_TOKEN_REFRESH_S", "600"))


def new_user_token(base_url: str, command: str | None = None) -> str:
    """An access token for a new user (contract-<random>@example.test)."""
    email = f"contract-{uuid.uuid4().hex[:16]}@example.test"
    if command:
        done = subprocess.run(
            ["sh", "-c", command],  # the operator's own command line, as configured
            env={**os.environ, "AVATAR_CHAT_EMAIL": email},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise RuntimeError(
                f"AVATAR_CHAT_TOKEN_COMMAND exited {done.returncode} without a token: {done.stderr.strip()}"
            )
        return lines[-1].strip()
    answer = httpx.post(f"{base_url.rstrip('/')}/app/dev/sign-in", json={"email": email}, timeout=30)
    if answer.status_code == 404:
        raise RuntimeError(
            "this server has no development sign-in (it is served only on the embedded default): "
            "set AVATAR_CHAT_TOKEN_COMMAND to a command printing a token for $AVATAR_CHAT_EMAIL"
        )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def ready_user_token(base_url: str, command: str | None = None) -> str:
    """A new user's token, the user with an avatar already (so a chain the stateful phase
    starts anywhere can send a message); a run's own `DELETE /avatars/me` may take it away."""
    token = new_user_token(base_url, command)
    made = httpx.post(
        f"{base_url.rstrip('/')}/avatars/me",
        json={"name": "Contract"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if made.status_code not in (201, 409):
        raise RuntimeError(f"creating the new user's avatar answered {made.status_code}: {made.text}")
    return token


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
