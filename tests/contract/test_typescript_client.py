"""A typed TypeScript client, as a client team would make it, works against a live server:
types generated from the committed openapi.json by openapi-typescript, calls made by
openapi-fetch, tests/contract/client.ts compiled with `tsc --strict` and run by node
against `avatar-chat serve` (sign in with a token, create an avatar, switch the persona
with If-Match, send a message, read the history).

The tools are pinned in tests/contract/npm/ and installed by ./scripts/node-tools into
.cache/node-tools/; the build (generated schema.d.ts, the compiled client.js) goes to a
folder of its own under .cache/node-tools/build/ (so node finds openapi-fetch), removed at
the end. The generated types are not committed: openapi.json is, and they are made from it
on every run, so a schema change that breaks a generated client fails here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.factories import create_user
from tests.support.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOOLS = ROOT / ".cache" / "node-tools"
BIN = TOOLS / "node_modules" / ".bin"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.same_on_every_major,
    pytest.mark.skipif(
        NODE is None or shutil.which("npm") is None,
        reason="node and npm are not on PATH: ./scripts/system-deps installs them",
    ),
]


def _run(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}", pytrace=False
        )
    return result.stdout


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    """client.js, compiled with tsc --strict against types generated from openapi.json."""
    _run([str(ROOT / "scripts" / "node-tools")], ROOT, timeout=300)
    (TOOLS / "build").mkdir(exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="client-", dir=TOOLS / "build"))
    try:
        (build / "package.json").write_text('{"type": "module"}\n')
        shutil.copy(HERE / "client.ts", build / "client.ts")
        _run([str(BIN / "openapi-typescript"), str(ROOT / "openapi.json"), "-o", "schema.d.ts"], build, 60)
        _run(
            [
                str(BIN / "tsc"),
                "--strict",
                "--noEmitOnError",
                "--target",
                "es2022",
                "--module",
                "nodenext",
                "--moduleResolution",
                "nodenext",
                "client.ts",
                "schema.d.ts",
            ],
            build,
            timeout=120,
        )
        yield build / "client.js"
    finally:
        shutil.rmtree(build, ignore_errors=True)


async def test_the_typed_client_signs_in_creates_switches_sends_and_reads(
    built: Path, database_url: str, owner: asyncpg.Connection
) -> None:
    assert NODE is not None
    user = await create_user(owner)
    async with ServerProcess(database_url=database_url) as server:
        env = {**os.environ, "AVATAR_CHAT_URL": server.base_url, "AVATAR_CHAT_TOKEN": user.token}
        out = _run([NODE, str(built)], built.parent, timeout=60, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["avatar_version"] == 1
    assert (result["switched_version"], result["switched_personality"]) == (2, "witty")
    assert (result["reply_personality"], result["reply_persona_version"]) == ("witty", 2)
    assert [(m["role"], m["status"]) for m in result["history"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert result["history"][0]["content"] == "Hello from TypeScript"
