"""Users for a contract run from outside: a new one per call, made through the server's
development sign-in or AVATAR_CHAT_TOKEN_COMMAND (docs/api-contract.md). Kept apart from
hooks.py, which registers itself with schemathesis when imported."""

from __future__ import annotations

import os
import subprocess
import uuid

import httpx


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
