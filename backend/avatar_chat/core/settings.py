"""All configuration, read once at start-up from the environment (and `.env`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values copied from documentation or `.env.example` that must never run in production.
_PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "secret",
        "your-super-secret-jwt-token-with-at-least-32-characters-long",
    }
)


class Environment(StrEnum):
    development = "development"
    production = "production"


class PoolMode(StrEnum):
    """What DATABASE_URL reaches: Postgres itself or a session-mode pooler (sessions are
    kept), or a transaction-mode pooler (a server connection only for one transaction)."""

    auto = "auto"
    direct = "direct"
    session = "session"
    transaction = "transaction"


# Supabase's transaction pooler (Supavisor) listens on 6543; pgbouncer's usual port is 6432.
TRANSACTION_POOLER_PORTS = frozenset({6543, 6432})


class StorageBackend(StrEnum):
    """Where avatar images live: auto is supabase when SUPABASE_URL and
    SUPABASE_SERVICE_ROLE_KEY are set, else local (files under DATA_DIR, served by the API)."""

    auto = "auto"
    local = "local"
    supabase = "supabase"


class LLMProviderName(StrEnum):
    offline = "offline"
    openai = "openai"


class ModerationProviderName(StrEnum):
    """offline: rules, no network (docs/safety.md); openai: POST /moderations; llama-guard: a
    Llama Guard model behind /chat/completions; none: no moderation (documented as unsafe)."""

    offline = "offline"
    openai = "openai"
    llama_guard = "llama-guard"
    none = "none"


class FailMode(StrEnum):
    """What a moderation provider's failure does: closed refuses (503), open goes on, recorded."""

    closed = "closed"
    open = "open"


class CrisisMode(StrEnum):
    """precede: the crisis notice, then the avatar's reply; replace: the notice instead of one."""

    precede = "precede"
    instead = "replace"


class OutputMode(StrEnum):
    """stream: the reply's text goes out as it comes and is checked every
    MODERATION_OUTPUT_CHECK_CHARS; hold: only text already checked goes out."""

    stream = "stream"
    hold = "hold"


class LogFormat(StrEnum):
    """text: one readable line per record (a terminal); json: one JSON object per line."""

    text = "text"
    json = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    app_env: Environment = Environment.development
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.text
    # Defaults of `avatar-chat serve --host/--port/--workers`.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    web_concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    # SIGTERM: stop accepting, let in-flight requests and streams finish this long.
    shutdown_grace_s: Annotated[float, Field(ge=0, le=600)] = 20.0

    # --- database -----------------------------------------------------------------------
    database_url: SecretStr | None = None
    data_dir: Path = Path(".data")
    migrate_on_start: bool | None = None
    db_pool_min_size: Annotated[int, Field(ge=0, le=100)] = 1
    db_pool_max_size: Annotated[int, Field(ge=1, le=200)] = 10
    # A request that finds every pooled connection busy waits its turn this long (503
    # `database_busy` after it); at most DB_ACQUIRE_QUEUE_MAX wait at once, the rest get it at once.
    db_acquire_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    db_acquire_queue_max: Annotated[int, Field(ge=1, le=100_000)] = 1000
    db_connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 10_000
    # auto: transaction when DATABASE_URL's port is 6543 or 6432, else session.
    db_pool_mode: PoolMode = PoolMode.auto
    # Named prepared statements per connection; unset: 100, or 0 behind a transaction pooler.
    db_statement_cache_size: Annotated[int, Field(ge=0)] | None = None
    # For `avatar-chat migrate` (needs a session: direct or session pooler); default DATABASE_URL.
    migration_database_url: SecretStr | None = None
    # A worker's liveness row lives this long unless renewed (every third of it); a reply
    # whose worker's row expired can be taken over by a retry.
    worker_ttl_s: Annotated[float, Field(ge=1, le=60)] = 5.0

    # --- Supabase auth --------------------------------------------------------------------
    supabase_url: str | None = None
    supabase_jwt_secret: SecretStr | None = None
    jwt_audience: str = "authenticated"
    jwks_cache_ttl_s: Annotated[float, Field(gt=0, le=600)] = 600.0
    jwt_leeway_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    # Server-side only: Storage writes and signed URLs, and deleting users (Auth admin API).
    supabase_service_role_key: SecretStr | None = None
    # The project's anon (publishable) key: public by design, handed to the web client at
    # /app/config.json so that it signs users in with Supabase Auth.
    supabase_anon_key: str | None = None

    # --- browsers on other origins (CORS) -------------------------------------------------
    # Exact origins (scheme://host[:port]) allowed to call the API from a browser; comma-separated.
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()
    # Let those origins send cookies / HTTP auth (the API itself needs none: bearer tokens).
    cors_allow_credentials: bool = False

    # --- avatar images ---------------------------------------------------------------------
    storage_backend: StorageBackend = StorageBackend.auto
    storage_bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")] = "avatars"
    storage_signed_url_ttl_s: Annotated[int, Field(ge=60, le=604_800)] = 3600
    avatar_image_max_bytes: Annotated[int, Field(ge=1024, le=50 * 1024 * 1024)] = 5 * 1024 * 1024
    # Image decodes one worker runs at once, each on a thread of its own and holding up to
    # about 100 MiB at its peak (avatars/images.py); one more upload meanwhile: 503 busy.
    image_decodes_per_worker: Annotated[int, Field(ge=1, le=32)] = 2

    # --- SessionStore -------------------------------------------------------------------
    session_store_max_avatars: Annotated[int, Field(ge=1)] = 10_000
    session_store_max_conversations: Annotated[int, Field(ge=1)] = 10_000

    # --- LLM ------------------------------------------------------------------------------
    llm_provider: LLMProviderName | None = None  # default: openai if LLM_BASE_URL/KEY set
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    llm_stall_timeout_s: Annotated[float, Field(gt=0, le=600)] = 20.0
    llm_max_retries: Annotated[int, Field(ge=0, le=5)] = 2
    llm_max_tokens: Annotated[int, Field(ge=1, le=32_000)] = 1024
    # Ask a streamed completion for its usage chunk (`stream_options.include_usage`); turn off
    # for a server that refuses the option (each reply's tokens are then estimated).
    llm_stream_usage: bool = True
    offline_llm_chunk_delay_ms: Annotated[int, Field(ge=0, le=5000)] = 20

    # --- chat -----------------------------------------------------------------------------
    chat_window_messages: Annotated[int, Field(ge=0, le=200)] = 20
    chat_window_max_chars: Annotated[int, Field(ge=0, le=200_000)] = 8000
    # What a prompt may hold of the conversation (summary + recent messages), in tokens
    # (estimated at four characters each), by conversation mode.
    chat_context_tokens_assistant: Annotated[int, Field(ge=100, le=1_000_000)] = 2000
    chat_context_tokens_companion: Annotated[int, Field(ge=100, le=1_000_000)] = 4000
    # Longest summary of the messages older than the window (characters).
    chat_summary_max_chars: Annotated[int, Field(ge=200, le=16_000)] = 2000
    chat_turn_deadline_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # A reply being generated holds a lease this long, renewed once less than half is left
    # (for all of a worker's replies in one statement); a reply whose lease ran out (its
    # worker vanished) can be retried.
    chat_reply_lease_s: Annotated[float, Field(ge=1, le=600)] = 15.0
    # How often a worker generating replies asks which of them a client follows from any
    # worker or asked to stop (one statement for all of them; also renews their leases).
    chat_demand_poll_ms: Annotated[int, Field(ge=50, le=10_000)] = 500
    # A reply someone follows or asked to stop saves its text so far at most this often and
    # after at most this many new characters, whichever comes first (0 ms: no partial
    # saves), so any worker can resume it for a client and stop it; followers poll it this
    # often. A reply nobody follows is saved once, when it ends.
    chat_partial_save_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    chat_partial_save_chars: Annotated[int, Field(ge=1, le=100_000)] = 200
    chat_stream_poll_ms: Annotated[int, Field(ge=10, le=10_000)] = 100
    # POST .../stop waits this long for the generating worker to save the reply as stopped.
    chat_stop_wait_s: Annotated[float, Field(ge=0, le=60)] = 3.0

    # --- usage and plans (docs/usage.md) ---------------------------------------------------
    # The plan of users the operator gave none (public.user_plans, app_metadata.plan):
    # created without limits when missing; its limits are edited in public.plans.
    usage_default_plan: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")] = "free"

    # --- data portability (docs/portability.md) -----------------------------------------
    # Exports one worker makes at once (each holds a pooled connection while it streams;
    # one more: 503 busy), exports per user per UTC day (0: no limit), and the longest one
    # may take (its client reading slowly included).
    exports_per_worker: Annotated[int, Field(ge=1, le=64)] = 2
    exports_per_day: Annotated[int, Field(ge=0, le=1000)] = 5
    export_timeout_s: Annotated[float, Field(ge=10, le=86_400)] = 600.0
    # POST /me/import: the largest archive (the request body), the largest file in it once
    # unpacked, and all of its files unpacked; one import at a time per worker.
    import_max_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = 64 * 1024 * 1024
    import_max_file_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = 64 * 1024 * 1024
    import_max_unpacked_bytes: Annotated[int, Field(ge=1024, le=8 * 1024 * 1024 * 1024)] = 512 * 1024 * 1024
    # The longest an import's transaction may take (its statements are not held to
    # DB_STATEMENT_TIMEOUT_MS: a large conversation is written in one).
    import_timeout_s: Annotated[float, Field(ge=10, le=86_400)] = 600.0

    # --- abuse limits (held in Postgres, so they hold across workers) --------------------
    rate_limit_sends_per_minute: Annotated[int, Field(ge=0)] = 30  # 0 disables
    max_concurrent_streams: Annotated[int, Field(ge=0)] = 3  # per user; 0 disables
    # SSE streams (streamed sends and follows) one user may hold open on one worker; 0 disables.
    max_open_streams_per_user: Annotated[int, Field(ge=0, le=10_000)] = 10
    # Image uploads (PUT /avatars/me/image) per user per minute, counted before the decode;
    # over it: 429 image_rate_limited. 0 disables.
    rate_limit_image_uploads_per_minute: Annotated[int, Field(ge=0)] = 6
    max_body_bytes: Annotated[int, Field(ge=1024)] = 65_536
    # Request line + all headers of one request (bytes); over it: 431, before the rest is
    # read. Supabase access tokens are 1-2 KB (the token check stops at 16 KiB); nginx
    # accepts 4 x 8 KiB header lines by default (large_client_header_buffers).
    max_header_bytes: Annotated[int, Field(ge=4096, le=1024 * 1024)] = 32 * 1024

    # --- safety: moderation, notices (docs/safety.md) --------------------------------------
    moderation_provider: ModerationProviderName = ModerationProviderName.offline
    moderation_base_url: str | None = None  # openai: https://api.openai.com/v1; llama-guard: required
    moderation_api_key: SecretStr | None = None
    moderation_model: str | None = None  # omni-moderation-latest / meta-llama/Llama-Guard-4-12B
    moderation_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    moderation_fail_mode: FailMode = FailMode.closed
    # Per-category actions over the defaults, "category=action,..." (allow, block, crisis).
    moderation_actions: str = ""
    # The reply is checked every this many characters as it streams (and once at the end).
    moderation_output_check_chars: Annotated[int, Field(ge=20, le=100_000)] = 200
    moderation_output_mode: OutputMode = OutputMode.stream
    moderation_filtered_text: Annotated[str, Field(min_length=1, max_length=2000)] = (
        "This reply was withheld because it did not meet our content guidelines."
    )
    safety_crisis_mode: CrisisMode = CrisisMode.precede
    safety_crisis_notice: Annotated[str, Field(min_length=1, max_length=4000)] = (
        "If you are thinking about suicide or self-harm, you are not alone and help is available now. "
        "In the US, call or text 988 (the 988 Suicide & Crisis Lifeline) or chat at 988lifeline.org; "
        "text HOME to 741741 to reach the Crisis Text Line. If you are in immediate danger, call 911 "
        "or your local emergency number. Outside the US, find a helpline at findahelpline.com."
    )
    # The crisis notice per locale, a JSON object {"en-GB": "...", "de": "..."}: the
    # request's Accept-Language picks one (exact tag, then its language), else the above.
    safety_crisis_notices: dict[str, Annotated[str, Field(min_length=1, max_length=4000)]] = {}
    # An empty text turns the notice off (docs/safety.md: the laws that require it).
    safety_disclosure_notice: Annotated[str, Field(max_length=2000)] = (
        "You are chatting with an AI, not a person."
    )
    safety_break_notice: Annotated[str, Field(max_length=2000)] = (
        "You have been chatting for a while. Consider taking a break. "
        "Remember: you are chatting with an AI, not a person."
    )
    safety_reminder_interval_minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 180.0
    safety_interaction_gap_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 30.0
    safety_suitability_notice: Annotated[str, Field(max_length=2000)] = (
        "AI companions may not be suitable for some minors."
    )

    # --- metrics (Prometheus) --------------------------------------------------------------
    metrics_enabled: bool = True
    # Set: GET /metrics needs `Authorization: Bearer <token>`; unset: open.
    metrics_token: SecretStr | None = None
    # Set: /metrics is served on this port (by `avatar-chat serve`'s supervisor) instead.
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.app_env is Environment.production:
            if self.database_url is None:
                raise ValueError("DATABASE_URL is required when APP_ENV=production")
            secret = self.supabase_jwt_secret
            if secret is not None and secret.get_secret_value() in _PLACEHOLDER_SECRETS:
                raise ValueError("SUPABASE_JWT_SECRET holds a placeholder value")
            if secret is None and self.supabase_url is None:
                raise ValueError("set SUPABASE_URL (JWKS) and/or SUPABASE_JWT_SECRET (HS256) in production")
        return self

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _exact_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_origin(origin) for origin in origins))

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_allow_origins:
            raise ValueError(
                "CORS_ALLOW_ORIGINS=* cannot go with CORS_ALLOW_CREDENTIALS=true: list the exact origins"
            )
        return self

    @model_validator(mode="after")
    def _supabase_storage_needs_its_key(self) -> Settings:
        if self.storage_backend is StorageBackend.supabase and not self.has_service_role:
            raise ValueError("STORAGE_BACKEND=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
        return self

    @property
    def resolved_storage_backend(self) -> StorageBackend:
        if self.storage_backend is not StorageBackend.auto:
            return self.storage_backend
        return StorageBackend.supabase if self.has_service_role else StorageBackend.local

    @property
    def has_service_role(self) -> bool:
        """Supabase's HTTP services may be called as the service role (Storage, Auth admin)."""
        return self.supabase_url is not None and self.supabase_service_role_key is not None

    @property
    def supabase_configured(self) -> bool:
        """Any setting of a Supabase project is set: its URL, JWT secret, anon or service key."""
        return any(
            value is not None
            for value in (
                self.supabase_url,
                self.supabase_jwt_secret,
                self.supabase_anon_key,
                self.supabase_service_role_key,
            )
        )

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def pool_mode_for(self, dsn: str) -> PoolMode:
        """The pool mode of DATABASE_URL (resolved to `dsn`): as set, or guessed from the port."""
        if self.db_pool_mode is not PoolMode.auto:
            return self.db_pool_mode
        return guess_pool_mode(dsn)

    @property
    def should_migrate_on_start(self) -> bool:
        return self.embedded if self.migrate_on_start is None else self.migrate_on_start

    @property
    def resolved_llm_provider(self) -> LLMProviderName:
        if self.llm_provider is not None:
            return self.llm_provider
        if self.llm_base_url or self.llm_api_key is not None:
            return LLMProviderName.openai
        return LLMProviderName.offline

    @property
    def jwt_issuer(self) -> str | None:
        if self.supabase_url is None:
            return None
        return self.supabase_url.rstrip("/") + "/auth/v1"

    @property
    def jwks_url(self) -> str | None:
        issuer = self.jwt_issuer
        return None if issuer is None else issuer + "/.well-known/jwks.json"


def check_origin(origin: str) -> str:
    """`origin` as a browser sends it in `Origin` (`scheme://host[:port]`, lower case), or `*`;
    anything else (a path, a trailing slash, a wildcard inside a name) is refused."""
    if origin == "*":
        return origin
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or "*" in parts.netloc
        or parts.username is not None
        or parts.password is not None
        or parts.path
        or parts.query
        or parts.fragment
        or origin.endswith(("?", "#"))
    ):
        raise ValueError(
            f"CORS_ALLOW_ORIGINS: {origin!r} is not an origin: write scheme://host[:port],"
            " with no path and no trailing slash (e.g. https://app.example.com)"
        )
    scheme = parts.scheme.lower()
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    # Browsers leave the scheme's default port out of Origin.
    default_port = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def guess_pool_mode(dsn: str) -> PoolMode:
    """Transaction mode on the transaction poolers' usual ports, else session."""
    try:
        port = urlsplit(dsn).port
    except ValueError:
        port = None
    return PoolMode.transaction if port in TRANSACTION_POOLER_PORTS else PoolMode.session
