"""The `avatar-chat` commands, run as a user runs them (subprocesses, real database)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import httpx

from app.auth.verifier import TokenVerifier
from app.core.settings import Settings

CLI = str(Path(sys.executable).parent / "avatar-chat")


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_command_is_idempotent(database_url: str) -> None:
    code, out, err = await run_cli("migrate", env={"DATABASE_URL": database_url})
    assert code == 0, err
    assert "nothing (up to date)" in out


async def test_token_command_creates_the_user_and_prints_a_valid_token(
    database_url: str, settings: Settings, owner: asyncpg.Connection
) -> None:
    assert settings.supabase_jwt_secret is not None
    env = {
        "DATABASE_URL": database_url,
        "SUPABASE_JWT_SECRET": settings.supabase_jwt_secret.get_secret_value(),
    }
    email = f"cli-{os.getpid()}@example.test"
    code, out, err = await run_cli("token", "--email", email, env=env)
    assert code == 0, err
    async with httpx.AsyncClient() as http:
        claims = await TokenVerifier(settings, http).verify(out.strip())
    assert claims.email == email
    assert await owner.fetchval("select id from auth.users where email = $1", email) == claims.sub
    # Again: the same user, not a second one.
    code, out, err = await run_cli("token", "--email", email, env=env)
    assert code == 0, err
    assert await owner.fetchval("select count(*) from auth.users where email = $1", email) == 1
