"""The `avatar-chat` commands, run as a user runs them (subprocesses, real database)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import httpx

from avatar_chat.auth.verifier import TokenVerifier
from avatar_chat.core.settings import Settings
from tests.support.servers import CLI, free_port, wait_ready


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


async def test_serve_on_the_embedded_default_from_nothing(tmp_path: Path) -> None:
    """What `./scripts/run` does on a fresh machine: no DATABASE_URL, no keys, no data."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "SUPABASE_JWT_SECRET", "SUPABASE_URL")
    }
    env.update({"DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"})
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_ready(proc, f"http://127.0.0.1:{port}", timeout_s=30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            assert (tmp_path / "data" / "jwt_secret").exists()
            code, token, err = await run_cli("token", "--email", "new@example.test", env=env)
            assert code == 0, err
            headers = {"Authorization": f"Bearer {token.strip()}"}
            created = await client.post("/avatars/me", json={"name": "Ava"}, headers=headers)
            assert created.status_code == 201, created.text
            switched = await client.patch(
                "/avatars/me/persona", json={"personality": "witty"}, headers=headers
            )
            assert (switched.status_code, switched.json()["version"]) == (200, 2)
            conversation = (await client.post("/conversations", json={}, headers=headers)).json()
            sent = await client.post(
                f"/conversations/{conversation['id']}/messages", json={"content": "hi"}, headers=headers
            )
            assert sent.status_code == 201
            assert "offline provider" in sent.json()["assistant_message"]["content"]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    # ...and it stopped the embedded database it started.
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()
