"""Where the database is and which JWT secret applies: configured, or the embedded default."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydantic import SecretStr

from avatar_chat.core.embedded import EmbeddedPostgres, local_jwt_secret
from avatar_chat.core.migrate import migrate
from avatar_chat.core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Runtime:
    settings: Settings  # with database_url and the JWT secret resolved
    dsn: str
    embedded: EmbeddedPostgres | None

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
    if settings.database_url is None:
        embedded = EmbeddedPostgres(settings.data_dir, stop_on_exit=stop_embedded)
        dsn = await asyncio.to_thread(embedded.start)
        log.info("embedded Postgres running in %s", embedded.pgdata)
        update: dict[str, object] = {
            "database_url": SecretStr(dsn),
            "migrate_on_start": settings.should_migrate_on_start,
        }
        if settings.supabase_jwt_secret is None:
            secret = await asyncio.to_thread(local_jwt_secret, settings.data_dir)
            update["supabase_jwt_secret"] = SecretStr(secret)
        settings = settings.model_copy(update=update)
    else:
        dsn = settings.database_url.get_secret_value()
    should_migrate = settings.should_migrate_on_start if migrate_now is None else migrate_now
    if should_migrate:
        applied = await migrate(dsn)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
    return Runtime(settings=settings, dsn=dsn, embedded=embedded)
