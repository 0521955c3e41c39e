"""Schema migrations: Supabase's local pieces when missing, then `supabase/migrations/`.

Each migration is applied as `supabase db push` applies it: split into statements by the
CLI's own splitter (`ops.sqlsplit`), run one by one (each as one extended-protocol
statement, as the CLI sends them, so a file that the CLI would split wrongly fails here
too), all of them and the history row in one transaction. The history goes where the
CLI keeps it (`supabase_migrations.schema_migrations`, with the same `statements`), so
`supabase db push`, `migration fetch`/`squash` and `avatar-chat migrate` agree on what a
database has. Server notices (a migration saying what to do by hand) are logged as
warnings.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from avatar_chat.core.settings import PoolMode
from avatar_chat.ops.sqlsplit import split_and_trim

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every process that migrates.
_MIGRATE_LOCK_KEY = 0x61766174  # "avat"

_HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def statements(self) -> list[str]:
        """What the Supabase CLI runs and records for this file."""
        return split_and_trim(self.sql)


def default_migrations_dir() -> Path:
    """The migrations this build ships: package data, `ops/sql/migrations`.

    In the checkout that folder is a symlink to `supabase/migrations`, the Supabase CLI's
    source of truth; building the wheel copies the files themselves into the package.
    """
    path = Path(str(resources.files("avatar_chat.ops").joinpath("sql/migrations")))
    if not path.is_dir():
        raise FileNotFoundError(f"this build of avatar-chat ships no migrations (looked in {path})")
    return path


def expected_version() -> str:
    """The newest migration this build ships: what /ready requires of the database."""
    migrations = discover(default_migrations_dir())
    if not migrations:
        raise FileNotFoundError(f"no migrations in {default_migrations_dir()}")
    return migrations[-1].version


async def is_applied(conn: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record], version: str) -> bool:
    """Whether `version` is recorded as applied (by this tool or the Supabase CLI)."""
    try:
        applied: bool = await conn.fetchval(
            "select exists (select from supabase_migrations.schema_migrations where version = $1)", version
        )
    except asyncpg.UndefinedTableError:
        return False
    return applied


def discover(migrations_dir: Path) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must be <YYYYMMDDHHMMSS>_<name>.sql: {path.name}")
        found.append(Migration(match["version"], match["name"], path))
    return found


def _supabase_local_sql() -> str:
    return resources.files("avatar_chat.ops").joinpath("sql/supabase_local.sql").read_text("utf-8")


async def ensure_supabase_pieces(conn: asyncpg.Connection) -> bool:
    """Create the roles, `auth` schema and publication a plain Postgres lacks.

    Returns whether anything was applied; a real Supabase project already has an `auth`
    schema and is left untouched.
    """
    has_auth = await conn.fetchval("select exists (select from pg_namespace where nspname = 'auth')")
    if has_auth:
        return False
    async with conn.transaction():
        await conn.execute(_supabase_local_sql())
    log.info("applied local Supabase pieces (roles, auth schema, publication)")
    return True


class SessionRequired(RuntimeError):
    """Migrating needs a connection that keeps its session (direct or session pooler)."""


_SESSION_REQUIRED = (
    "avatar-chat migrate needs a direct connection or a session-mode pooler (it holds a session"
    " advisory lock), but {url} {why}. Set MIGRATION_DATABASE_URL to the direct connection"
    " (db.<ref>.supabase.co:5432) or the session pooler (port 5432)."
)


async def _require_session(conn: asyncpg.Connection, dsn: str) -> None:
    """Refuse a transaction-mode pooler, which would hand our statements to server
    connections other than the one holding the migration lock. Neither check can fire on
    a real session: two client connections never share a backend, and a session holds
    its own lock."""
    url = _redacted(dsn)
    own_pid = await conn.fetchval("select pg_backend_pid()")
    holds_lock = await conn.fetchval(
        "select exists (select from pg_locks where locktype = 'advisory' and granted"
        " and pid = pg_backend_pid() and objid = $1)",
        _MIGRATE_LOCK_KEY,
    )
    if not holds_lock:
        raise SessionRequired(_SESSION_REQUIRED.format(url=url, why="lost its session lock at once"))
    other: asyncpg.Connection = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        if await other.fetchval("select pg_backend_pid()") == own_pid:
            raise SessionRequired(
                _SESSION_REQUIRED.format(url=url, why="shares server connections between clients")
            )
    finally:
        await other.close()


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port}" if parts.port else host


async def migrate(
    dsn: str, migrations_dir: Path | None = None, *, pool_mode: PoolMode = PoolMode.session
) -> list[str]:
    """Bring the database up to date; returns the versions applied by this call.

    Idempotent and safe to run from several processes at once: a session advisory lock
    makes concurrent runs queue, and each migration commits with its history row. Raises
    `SessionRequired` for a transaction-mode pooler (configured, or detected).
    """
    if pool_mode is PoolMode.transaction:
        raise SessionRequired(
            _SESSION_REQUIRED.format(url=_redacted(dsn), why="is configured as a transaction pooler")
        )
    migrations = discover(migrations_dir or default_migrations_dir())
    conn: asyncpg.Connection = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        await conn.execute("select pg_advisory_lock($1)", _MIGRATE_LOCK_KEY)
        try:
            await _require_session(conn, dsn)
            await ensure_supabase_pieces(conn)
            await conn.execute(_HISTORY_DDL)
            applied = {
                row["version"]
                for row in await conn.fetch("select version from supabase_migrations.schema_migrations")
            }
            done: list[str] = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                await _apply(conn, migration)
                log.info("applied migration %s_%s", migration.version, migration.name)
                done.append(migration.version)
            return done
        finally:
            await conn.execute("select pg_advisory_unlock($1)", _MIGRATE_LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    """Run the migration's statements and record it, in one transaction."""
    statements = migration.statements
    label = f"{migration.version}_{migration.name}"

    def on_notice(_: object, message: asyncpg.PostgresLogMessage) -> None:
        log.warning("migration %s: %s: %s", label, message.severity, message.message)

    conn.add_log_listener(on_notice)
    try:
        async with conn.transaction():
            for index, statement in enumerate(statements):
                try:
                    # fetch, not execute: one extended-protocol statement, as the CLI sends it.
                    await conn.fetch(statement)
                except asyncpg.PostgresError as exc:
                    exc.add_note(f"in migration {label}, statement {index + 1} of {len(statements)}:")
                    exc.add_note(statement)
                    raise
            await conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements)"
                " values ($1, $2, $3)",
                migration.version,
                migration.name,
                statements,
            )
    finally:
        conn.remove_log_listener(on_notice)
