"""The vendored supabase-js is the one scripts/vendor-supabase-js pins (version and
sha256), with its license, and the one the client loads; the browser tests' axe-core is
the one scripts/vendor-axe-core pins, with its licenses, and lives under tests/ only (a
test dependency: the app never serves it). No network: the scripts themselves reproduce
them from the npm registry."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from avatar_chat.web.router import STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "vendor-supabase-js"
AXE_SCRIPT = ROOT / "scripts" / "vendor-axe-core"
TEST_VENDOR = Path(__file__).resolve().parent / "vendor"


def _pinned(name: str, script: Path = SCRIPT) -> str:
    match = re.search(rf"^{name}=(\S+)$", script.read_text(), re.MULTILINE)
    assert match, f"{name}= not found in {script}"
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


def test_the_tests_axe_core_is_the_pinned_one_and_not_served() -> None:
    version, sha256 = _pinned("VERSION", AXE_SCRIPT), _pinned("SHA256", AXE_SCRIPT)
    vendored = sorted(TEST_VENDOR.iterdir())
    assert [p.name for p in vendored] == [f"axe-core@{version}"]
    build = vendored[0] / "axe.min.js"
    assert hashlib.sha256(build.read_bytes()).hexdigest() == sha256
    assert build.read_text().startswith(f"/*! axe v{version}\n")
    assert "Mozilla Public License, version 2.0" in (vendored[0] / "LICENSE").read_text()
    assert "MIT License" in (vendored[0] / "LICENSE-3RD-PARTY.txt").read_text()
    # Nothing of it where the app serves files from.
    assert not [p for p in STATIC_DIR.rglob("*") if "axe" in p.name.lower()]
