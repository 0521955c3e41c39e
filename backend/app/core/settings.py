"""All configuration, read once at start-up from the environment (and `.env`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values copied from documentation or `.env.example` that must never run in production.
_PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "your-super-secret-jwt-token-with-at-least-32-characters-long"}
)


class Environment(StrEnum):
    development = "development"
    production = "production"


class LLMProviderName(StrEnum):
    offline = "offline"
    openai = "openai"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    app_env: Environment = Environment.development
    log_level: str = "INFO"

    # --- database -----------------------------------------------------------------------
    database_url: SecretStr | None = None
    data_dir: Path = Path(".data")
    migrate_on_start: bool | None = None
    db_pool_min_size: Annotated[int, Field(ge=0, le=100)] = 1
    db_pool_max_size: Annotated[int, Field(ge=1, le=200)] = 10
    db_acquire_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    db_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    db_statement_cache_size: Annotated[int, Field(ge=0)] = 100

    # --- Supabase auth --------------------------------------------------------------------
    supabase_url: str | None = None
    supabase_jwt_secret: SecretStr | None = None
    jwt_audience: str = "authenticated"
    jwks_cache_ttl_s: Annotated[float, Field(gt=0, le=600)] = 600.0
    jwt_leeway_s: Annotated[float, Field(ge=0, le=300)] = 10.0

    # --- SessionStore -------------------------------------------------------------------
    session_store_max_avatars: Annotated[int, Field(ge=1)] = 10_000
    session_store_max_conversations: Annotated[int, Field(ge=1)] = 10_000

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.app_env is Environment.production:
            if self.database_url is None:
                raise ValueError("DATABASE_URL is required when APP_ENV=production")
            secret = self.supabase_jwt_secret
            if secret is not None and secret.get_secret_value() in _PLACEHOLDER_SECRETS:
                raise ValueError("SUPABASE_JWT_SECRET holds a placeholder value")
            if secret is None and self.supabase_url is None:
                raise ValueError(
                    "set SUPABASE_URL (JWKS) and/or SUPABASE_JWT_SECRET (HS256) in production"
                )
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def should_migrate_on_start(self) -> bool:
        return self.embedded if self.migrate_on_start is None else self.migrate_on_start

    @property
    def jwt_issuer(self) -> str | None:
        if self.supabase_url is None:
            return None
        return self.supabase_url.rstrip("/") + "/auth/v1"

    @property
    def jwks_url(self) -> str | None:
        issuer = self.jwt_issuer
        return None if issuer is None else issuer + "/.well-known/jwks.json"
