"""The vendored supabase-js is the one scripts/vendor-supabase-js pins (version and
sha256), with its license, and the one the client loads. No network: the script itself
reproduces it from the npm registry."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from avatar_chat.web.router import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vendor-supabase-js"


def _pinned(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SCRIPT.read_text(), re.MULTILINE)
    assert match, f"{name}= not found in {SCRIPT}"
    return match.group(1)


def test_the_vendored_build_is_the_pinned_one_and_the_one_loaded() -> None:
    version, sha256 = _pinned("VERSION"), _pinned("SHA256")
    vendored = sorted((STATIC_DIR / "vendor").iterdir())
    assert [p.name for p in vendored] == [f"supabase-js@{version}"]
    build = vendored[0] / "supabase.js"
    assert hashlib.sha256(build.read_bytes()).hexdigest() == sha256
    assert "MIT License" in (vendored[0] / "LICENSE").read_text()
    auth_js = (STATIC_DIR / "auth.js").read_text()
    assert f'"./vendor/supabase-js@{version}/supabase.js"' in auth_js
