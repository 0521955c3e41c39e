"""The per-user limits: sends and streams enforced by Postgres triggers (so they hold
across workers, machines and Data API writers), image uploads counted in Postgres before
each decode, and the default plan (docs/usage.md); configured from the settings at start-up."""

from __future__ import annotations

import logging

import asyncpg

from avatar_chat.core.database import Database
from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.core.settings import Settings

log = logging.getLogger(__name__)


async def configure_database_limits(db: Database, settings: Settings) -> None:
    """Write this deployment's limits where every worker's writes are checked against them.

    With the database away at start-up, the limits it already holds stay in force."""
    try:
        async with db.connection() as conn:
            await conn.execute(
                "select avatar_chat.configure_limits($1, $2), avatar_chat.configure_image_upload_rate($3),"
                " avatar_chat.configure_default_plan($4)",
                settings.rate_limit_sends_per_minute,
                settings.max_concurrent_streams,
                settings.rate_limit_image_uploads_per_minute,
                settings.usage_default_plan,
            )
    except ServiceUnavailable:
        log.warning("could not write the abuse limits: the database is unavailable")
    except asyncpg.UndefinedFunctionError:
        # A database behind this build (/ready answers schema_outdated until it is
        # migrated): the limits it holds stay in force until a worker starts on it migrated.
        log.warning("could not write the limits: the database schema is behind this build")
