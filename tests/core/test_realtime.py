"""Supabase Realtime never blocks a deploy.

Each database is set up as a Supabase project is: the platform (a superuser) creates the
roles, the auth and storage schemas and the `supabase_realtime` publication, and the
migrations are then applied by a role that is NOT a superuser, as Supabase's `postgres`
is not: it owns the database (so it may create schemas, and owns `public`), is a member
of the API roles and of the auth and storage owners, and nothing more. Then the
publication is missing, owned by another role, or the migrating role's own.
"""

from __future__ import annotations

import logging

import asyncpg
import pytest

from avatar_chat.ops.migrate import default_migrations_dir, discover, migrate
from tests.support.supabase_projects import assert_fully_migrated, supabase_project

PUBLISHED = {"public.messages", "public.conversations"}


async def published(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "select schemaname || '.' || tablename from pg_publication_tables where pubname = 'supabase_realtime'"
    )
    return {r[0] for r in rows}


def realtime_notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in caplog.messages if "supabase_realtime" in m]


async def test_without_the_publication_the_migrations_apply_and_say_what_to_do(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with supabase_project(database_url) as project:
        await project.admin.execute("drop publication supabase_realtime")
        with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
            applied = await migrate(project.dsn)
        await assert_fully_migrated(project, applied)
        notices = realtime_notices(caplog)
        assert len(notices) == 2, notices
        for notice, table in zip(notices, ["public.messages", "public.conversations"], strict=True):
            assert "NOTICE: publication supabase_realtime does not exist" in notice
            assert f"alter publication supabase_realtime add table {table};" in notice


async def test_with_a_publication_of_another_role_the_migrations_apply_and_say_what_to_do(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with supabase_project(database_url) as project:
        await project.admin.execute("alter publication supabase_realtime owner to supabase_storage_admin")
        await project.admin.execute(f"revoke supabase_storage_admin from {project.role}")  # not theirs to use
        with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
            applied = await migrate(project.dsn)
        await assert_fully_migrated(project, applied)
        assert await published(project.admin) == set()
        notices = realtime_notices(caplog)
        assert len(notices) == 2, notices
        for notice, table in zip(notices, ["public.messages", "public.conversations"], strict=True):
            assert "NOTICE: not the owner of publication supabase_realtime" in notice
            assert "must be owner of publication supabase_realtime" in notice
            assert f"run as its owner: alter publication supabase_realtime add table {table};" in notice
        # ...and what the notice says works.
        await project.admin.execute(
            "alter publication supabase_realtime add table public.messages, public.conversations"
        )
        assert await published(project.admin) == PUBLISHED


async def test_with_the_migrating_role_s_publication_both_tables_are_published(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with supabase_project(database_url) as project:
        await project.admin.execute(f"alter publication supabase_realtime owner to {project.role}")
        with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
            applied = await migrate(project.dsn)
        await assert_fully_migrated(project, applied)
        assert await published(project.admin) == PUBLISHED
        assert realtime_notices(caplog) == []

        # Run again (as where the tables were published by hand before): a notice, no error.
        blocks = [
            statement
            for migration in discover(default_migrations_dir())
            for statement in migration.statements
            if "alter publication supabase_realtime add table" in statement
        ]
        assert len(blocks) == 2
        conn = await asyncpg.connect(project.dsn)
        notices: list[str] = []
        conn.add_log_listener(lambda _, message: notices.append(message.message))
        try:
            for block in blocks:
                await conn.execute(block)
        finally:
            await conn.close()
        assert notices == [
            "public.messages is already in publication supabase_realtime",
            "public.conversations is already in publication supabase_realtime",
        ]


async def test_a_for_all_tables_publication_does_not_block(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Where a superuser migrates (self-hosted, or the embedded mode) and the publication
    streams every table already."""
    async with supabase_project(database_url) as project:
        await project.admin.execute(
            "drop publication supabase_realtime; create publication supabase_realtime for all tables"
        )
        with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
            applied = await migrate(project.admin_dsn)
        assert applied == [m.version for m in discover(default_migrations_dir())]
        assert await published(project.admin) >= PUBLISHED
        notices = realtime_notices(caplog)
        assert len(notices) == 2, notices
        assert all("FOR ALL TABLES" in notice for notice in notices), notices


async def test_the_test_database_publishes_messages_and_conversations(owner: asyncpg.Connection) -> None:
    assert await published(owner) >= PUBLISHED
