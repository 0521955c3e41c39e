"""What the web client's routes do: its configuration, and the dev sign-in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from pydantic import SecretStr

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.core.database import Database
from avatar_chat.core.http import host_name, is_rebinding_safe
from avatar_chat.core.settings import Environment, Settings
from avatar_chat.web import repository
from avatar_chat.web.schemas import ClientMode, DevSession, DevUser, WebConfig

# A working day: a developer is not sent back to the sign-in every hour.
DEV_TOKEN_TTL_S: Final = 12 * 3600
# Addresses that mean "every interface": the server was started for no name in particular.
_ANY_ADDRESS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared, never bound


class DevSignIn:
    """Signs anyone in as any email, with no password: only ever built for the embedded
    database in development, where the users are local rows and the JWT secret is the
    generated one."""

    def __init__(self, db: Database, *, secret: SecretStr, issuer: str | None, bind_host: str) -> None:
        self._db = db
        self._secret = secret
        self._issuer = issuer
        bound = bind_host.strip("[]").lower()
        self._bound_name = None if bound in _ANY_ADDRESS else bound

    def answers_for(self, host_header: str | None) -> bool:
        """Whether a request that names this `Host` may sign in: loopback names, IP
        literals (neither can be a name an attacker's DNS points here: DNS rebinding) and
        the name the server was started for (HOST / --host)."""
        name = host_name(host_header)
        if name is None:
            return False
        return is_rebinding_safe(name) or name == self._bound_name

    async def sign_in(self, email: str) -> DevSession:
        async with self._db.connection() as conn:
            user_id = await repository.find_or_create_user(conn, email)
        issued_at = int(time.time())
        token = mint_access_token(
            self._secret.get_secret_value(),
            user_id=user_id,
            email=email,
            ttl_s=DEV_TOKEN_TTL_S,
            issuer=self._issuer,
        )
        return DevSession(
            access_token=token,
            expires_in=DEV_TOKEN_TTL_S,
            expires_at=issued_at + DEV_TOKEN_TTL_S,
            user=DevUser(id=user_id, email=email),
        )


@dataclass(frozen=True, slots=True)
class WebClient:
    config_json: bytes  # served as it is: rendered once
    dev_sign_in: DevSignIn | None  # None: POST /app/dev/sign-in answers 404


def create_web_client(
    settings: Settings, db: Database, *, embedded_database: bool, local_jwt_secret: SecretStr | None
) -> WebClient:
    """The dev sign-in exists only where what it signs is worth nothing elsewhere: the
    embedded database, APP_ENV=development, the secret generated for this data folder
    (`local_jwt_secret`) and no setting of a Supabase project at all (a configured
    SUPABASE_JWT_SECRET may be a real project's legacy secret, and SUPABASE_URL would make
    its tokens claim that project as issuer). config.json names Supabase Auth when the
    project's URL and anon key are set, else the dev sign-in if it exists; and the
    suitability notice (SAFETY_SUITABILITY_NOTICE) the client shows, null when empty."""
    dev = None
    if (
        embedded_database
        and settings.app_env is Environment.development
        and local_jwt_secret is not None
        and not settings.supabase_configured
    ):
        dev = DevSignIn(db, secret=local_jwt_secret, issuer=None, bind_host=settings.host)
    suitability = settings.safety_suitability_notice or None  # an empty text: not shown
    if settings.supabase_url and settings.supabase_anon_key:
        config = WebConfig(
            mode="supabase",
            supabase_url=settings.supabase_url.rstrip("/"),
            supabase_anon_key=settings.supabase_anon_key,
            suitability_notice=suitability,
        )
    else:
        mode: ClientMode = "dev" if dev is not None else "none"
        config = WebConfig(
            mode=mode, supabase_url=None, supabase_anon_key=None, suitability_notice=suitability
        )
    return WebClient(config_json=config.model_dump_json().encode(), dev_sign_in=dev)
