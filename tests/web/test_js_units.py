"""The web client's pure modules, without a browser: the reducer that reads a reply's
server-sent events (safety notices, a withheld reply, a crisis notice in place of one
included), the event-stream format, event ids and resuming, what one message shows, the
retry and backoff decisions, the 429 countdown, the usage meter and a used-up quota's
message, data portability (the names an export and a character card are saved as, a card's
media type, what an import did, what a refused export, import or card says), the avatar
panel and the account (when the image's signed URLs are renewed, what changed from one
persona version to the next, what a refused upload, restore or account deletion says),
and the personalities read from the app's OpenAPI schema (the real one, handed over in a
file).
Written for Node's own test runner (`node --test`, tests/web/js/*.test.mjs, importing the
modules from backend/avatar_chat/web/static/) and run from here, so that the one test
command runs them; when they fail, the failure is node's own output."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")


@pytest.mark.skipif(
    NODE is None,
    reason="node is not on PATH: ./scripts/system-deps installs it (apt-get install nodejs)",
)
def test_the_web_clients_modules_pass_their_node_tests(tmp_path: Path) -> None:
    assert NODE is not None
    files = sorted(JS_TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs in {JS_TESTS}"
    # The schema the page reads at GET /openapi.json, for personalities.test.mjs.
    openapi = create_app(Settings(_env_file=None, data_dir=tmp_path / "data")).openapi()
    personalities = openapi["components"]["schemas"]["PersonalityType"]["enum"]
    assert personalities
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(openapi))
    env = {
        **os.environ,
        "AVATAR_CHAT_OPENAPI": str(schema_file),
        "AVATAR_CHAT_PERSONALITIES": json.dumps(personalities),
        "NO_COLOR": "1",
    }
    result = subprocess.run(
        [NODE, "--test", "--test-reporter=spec", *(str(f.relative_to(ROOT)) for f in files)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"node --test exited {result.returncode}:\n{output}", pytrace=False)
    # Nothing left out: the test of the real schema ran too.
    skipped = re.search(r"^\S* ?skipped (\d+)$", output, re.MULTILINE)
    assert skipped and skipped.group(1) == "0", output
