"""The committed OpenAPI document (openapi.json at the repository's root): what the app
serves at GET /openapi.json with default settings, written deterministically (sorted keys,
two-space indent, a final newline) so that a change to it shows as a diff in review.

    python -m tests.support.openapi_spec          # (re)write openapi.json
    python -m tests.support.openapi_spec --check  # exit 1 when it differs from the served one

./scripts/openapi runs the first; tests/core/test_openapi_committed.py does the second."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi.json"
REGENERATE = "./scripts/openapi"


class _Defaults(Settings):
    """The settings' defaults only: no environment variable, no .env file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def served() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        schema: dict[str, Any] = create_app(_Defaults(data_dir=Path(data))).openapi()
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(served())
    if argv == ["--check"]:
        if not COMMITTED.exists() or COMMITTED.read_text(encoding="utf-8") != text:
            print(f"{COMMITTED.name} differs from the served schema: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    COMMITTED.write_text(text, encoding="utf-8")
    print(f"wrote {COMMITTED.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
