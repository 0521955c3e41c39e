"""Every setting is documented where users look: .env.example and docs/configuration.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from avatar_chat.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_env_example_and_the_configuration_page() -> None:
    env_example = (ROOT / ".env.example").read_text()
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    names = [name.upper() for name in Settings.model_fields]
    assert [n for n in names if n not in env_example] == []
    assert [n for n in names if f"`{n}`" not in configuration] == []


def test_production_refuses_placeholders() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, app_env="production")
    with pytest.raises(ValidationError):
        Settings(
            _env_file=None,
            app_env="production",
            database_url=SecretStr("postgresql://x@y/z"),
            supabase_jwt_secret=SecretStr("changeme"),
        )
    ok = Settings(
        _env_file=None,
        app_env="production",
        database_url=SecretStr("postgresql://x@y/z"),
        supabase_url="https://abc.supabase.co",
    )
    assert ok.jwks_url == "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
