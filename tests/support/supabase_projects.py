"""Databases set up as a Supabase project is: the platform (a superuser) creates the roles,
the auth and storage schemas and the `supabase_realtime` publication, and the migrations
are applied by a role that is NOT a superuser, as Supabase's `postgres` is not."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from avatar_chat.ops.migrate import default_migrations_dir, discover, ensure_supabase_pieces
from tests.support.databases import fresh_database


@dataclass
class Project:
    admin: asyncpg.Connection  # the platform: a superuser, in the project's database
    admin_dsn: str
    dsn: str  # the migrating role's
    role: str
    database: str


def as_role(dsn: str, role: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role)}:{quote(password)}@{host}"))


@asynccontextmanager
async def supabase_project(server_dsn: str) -> AsyncIterator[Project]:
    """A fresh database bootstrapped as a Supabase project, and a non-superuser to migrate."""
    role = "t_postgres_" + uuid.uuid4().hex[:8]
    password = secrets.token_urlsafe(16)
    server = await asyncpg.connect(server_dsn)
    try:
        await server.execute(f"create role {role} login nosuperuser inherit password '{password}'")
        try:
            async with fresh_database(server_dsn) as dsn:
                database = urlsplit(dsn).path.lstrip("/")
                admin = await asyncpg.connect(dsn)
                try:
                    assert await ensure_supabase_pieces(admin)
                    await admin.execute(
                        f'alter database "{database}" owner to {role};'
                        f" grant anon, authenticated, service_role, supabase_auth_admin,"
                        f" supabase_storage_admin to {role}"
                    )
                    assert not await admin.fetchval("select rolsuper from pg_roles where rolname = $1", role)
                    yield Project(admin, dsn, as_role(dsn, role, password), role, database)
                finally:
                    await admin.close()
        finally:
            await server.execute(f"drop role if exists {role}")
    finally:
        await server.close()


async def assert_fully_migrated(project: Project, applied: list[str]) -> None:
    versions = [m.version for m in discover(default_migrations_dir())]
    assert applied == versions
    recorded = await project.admin.fetch(
        "select version from supabase_migrations.schema_migrations order by 1"
    )
    assert [r[0] for r in recorded] == versions
    owners = await project.admin.fetch(
        "select c.relname, c.relowner::regrole::text from pg_class c"
        " where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and c.relname = any($1)",
        ["avatars", "conversations", "messages"],
    )
    assert {r[1] for r in owners} == {project.role} and len(owners) == 3
