"""What a run leaves behind: the machine and the code measured, and the JSON file under
`bench/results/`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avatar_chat
from bench.harness.paths import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        **code_version(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the files of the server side changed since (uncommitted)."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False, timeout=30
        )
        return proc.stdout.strip()

    package = Path(avatar_chat.__file__).resolve().parent
    if package.is_relative_to(REPO_ROOT):
        changed = git("status", "--porcelain", "--", "backend", "supabase", "pyproject.toml")
        return {"commit": git("log", "-1", "--oneline"), "uncommitted": changed.splitlines()}
    # PYTHONPATH=<an export of some commit>/backend measures that code instead.
    return {"commit": git("log", "-1", "--oneline"), "uncommitted": [], "avatar_chat": str(package)}


def print_code_version() -> None:
    version = code_version()
    dirty = ", ".join(line.strip() for line in version["uncommitted"])
    if "avatar_chat" in version:
        print(f"  code: avatar_chat from {version['avatar_chat']}, not this checkout ({version['commit']})")
    else:
        print(f"  code: {version['commit']}" + (f" + uncommitted: {dirty}" if dirty else ""))


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{timestamp()}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
