"""Where the database is and which JWT secret applies: configured, or the embedded default."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Final

from pydantic import SecretStr

from avatar_chat.core.settings import PoolMode, Settings, guess_pool_mode
from avatar_chat.ops.embedded import EmbeddedPostgres, local_jwt_secret
from avatar_chat.ops.migrate import migrate

log = logging.getLogger(__name__)

# `avatar-chat serve` starts the embedded database once and hands its workers the address
# in DATABASE_URL; the same address in this variable tells them that it is the embedded one.
EMBEDDED_HANDOFF_ENV: Final = "AVATAR_CHAT_EMBEDDED_DATABASE_URL"


@dataclass(slots=True)
class Runtime:
    """What the settings leave open, resolved: the database to use (the embedded one
    when no DATABASE_URL is set) and the HS256 secret (the embedded mode's generated one
    when none is set). The settings themselves are never copied or changed."""

    dsn: str
    jwt_secret: SecretStr | None
    embedded: EmbeddedPostgres | None
    # The database is the embedded one: started here, or by `avatar-chat serve` for its workers.
    embedded_database: bool = False
    # jwt_secret is the one generated for this data folder (no SUPABASE_JWT_SECRET is set):
    # it can sign nothing that a Supabase project would accept.
    jwt_secret_is_local: bool = False

    async def close(self) -> None:
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.release)


async def prepare(
    settings: Settings, *, migrate_now: bool | None = None, stop_embedded: bool = True
) -> Runtime:
    """Resolve (and with no DATABASE_URL, start) the database; migrate when asked.

    `migrate_now=None` follows the settings (by default: migrate the embedded database).
    """
    embedded: EmbeddedPostgres | None = None
    jwt_secret = settings.supabase_jwt_secret
    if settings.database_url is None:
        embedded = EmbeddedPostgres(settings.data_dir, stop_on_exit=stop_embedded)
        dsn = await asyncio.to_thread(embedded.start)
        log.info("embedded Postgres running in %s", embedded.pgdata)
    else:
        dsn = settings.database_url.get_secret_value()
    embedded_database = embedded is not None or os.environ.get(EMBEDDED_HANDOFF_ENV) == dsn
    # Each of serve's workers reads the generated secret from the data folder itself: it
    # is never handed over as SUPABASE_JWT_SECRET, which would make it look configured.
    jwt_secret_is_local = jwt_secret is None and embedded_database
    if jwt_secret_is_local:
        jwt_secret = SecretStr(await asyncio.to_thread(local_jwt_secret, settings.data_dir))
    should_migrate = settings.should_migrate_on_start if migrate_now is None else migrate_now
    if should_migrate:
        url, mode = migration_target(settings, dsn)
        applied = await migrate(url, pool_mode=mode)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    return Runtime(
        dsn=dsn,
        jwt_secret=jwt_secret,
        embedded=embedded,
        embedded_database=embedded_database,
        jwt_secret_is_local=jwt_secret_is_local,
    )


def migration_target(settings: Settings, dsn: str) -> tuple[str, PoolMode]:
    """Where to migrate (MIGRATION_DATABASE_URL, else the database `dsn`), and its pool mode."""
    if settings.migration_database_url is not None:
        url = settings.migration_database_url.get_secret_value()
        return url, guess_pool_mode(url)
    return dsn, settings.pool_mode_for(dsn)
