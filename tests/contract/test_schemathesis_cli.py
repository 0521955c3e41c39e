"""#23: schemathesis run from outside, as a client team runs it (./scripts/api-contract):
against `avatar-chat serve --workers 2` on the embedded default, every check (`--checks
all`) in every phase (examples, coverage, fuzzing, stateful), each phase as a user of its
own made through the development sign-in: 0 failures. And the hook's other way to users,
AVATAR_CHAT_TOKEN_COMMAND, as a self-hosted deployment uses it (`avatar-chat token`)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.contract.users import ready_user_token
from tests.support.servers import CLI, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "api-contract"
PHASES = ("examples", "coverage", "fuzzing", "stateful")


@pytest.mark.same_on_every_major
@pytest.mark.outside
async def test_every_schemathesis_check_passes_in_every_phase_from_outside(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "APP_ENV": "development"}
    async with ServerProcess(database_url=None, workers=2, env=env) as server:
        report = tmp_path / "report.json"
        done = await asyncio.to_thread(
            subprocess.run,
            [
                str(SCRIPT),
                server.base_url,
                "--seed",
                "23",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(report),
                "--no-color",
            ],
            cwd=tmp_path,  # as from anywhere: the script finds its own checkout
            env={k: v for k, v in os.environ.items() if not k.startswith("AVATAR_CHAT_")},
            capture_output=True,
            text=True,
            timeout=480,
            check=False,
        )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    events = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    finished = {
        e["PhaseFinished"]["phase"]["name"].lower(): e["PhaseFinished"]["status"]
        for e in events
        if "PhaseFinished" in e
    }
    # Every phase ran (none skipped for want of examples or links) and passed.
    assert {p: finished.get(p) for p in PHASES} == dict.fromkeys(PHASES, "success"), finished


@pytest.mark.outside
async def test_the_hook_makes_users_with_a_token_command(database_url: str) -> None:
    """AVATAR_CHAT_TOKEN_COMMAND: each user a new one, with an avatar, the server takes it."""
    async with ServerProcess(database_url=database_url) as server:
        database = " ".join(
            f"{name}={shlex.quote(server._env[name])}" for name in ("DATABASE_URL", "SUPABASE_JWT_SECRET")
        )
        command = f'{database} {shlex.quote(str(CLI))} token --email "$AVATAR_CHAT_EMAIL"'
        tokens = [await asyncio.to_thread(ready_user_token, server.base_url, command) for _ in range(2)]
        async with server.client() as client:
            avatars = [
                (await client.get("/avatars/me", headers={"Authorization": f"Bearer {t}"})).json()
                for t in tokens
            ]
    assert [a["name"] for a in avatars] == ["Contract", "Contract"]
    assert avatars[0]["user_id"] != avatars[1]["user_id"]
