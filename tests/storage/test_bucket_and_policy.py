"""The `avatars` bucket and its Storage policy, as the migrations leave them: a client
reading Storage with its own token sees only the objects under its own folder."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from avatar_chat.ops.migrate import migrate
from tests.support.databases import as_role, claims_of
from tests.support.factories import User
from tests.support.supabase_projects import assert_fully_migrated, supabase_project


async def test_the_bucket_is_private_and_limited(owner: asyncpg.Connection) -> None:
    bucket = await owner.fetchrow(
        "select public, file_size_limit, allowed_mime_types from storage.buckets where id = 'avatars'"
    )
    assert bucket is not None
    assert bucket["public"] is False
    assert bucket["file_size_limit"] == 1024 * 1024
    assert bucket["allowed_mime_types"] == ["image/webp"]


async def test_a_user_reads_only_their_own_objects(
    owner: asyncpg.Connection, conn: asyncpg.Connection, user: User, other_user: User
) -> None:
    mine, theirs = f"{user.id}/{'a' * 32}/512.webp", f"{other_user.id}/{'b' * 32}/512.webp"
    await owner.executemany(
        "insert into storage.objects (bucket_id, name) values ($1, $2)",
        [("avatars", mine), ("avatars", theirs)],
    )
    async with as_role(conn, "authenticated", claims_of(user)):
        names = [r["name"] for r in await conn.fetch("select name from storage.objects")]
    assert mine in names and theirs not in names
    async with as_role(conn, "anon"):
        assert await conn.fetch("select name from storage.objects where bucket_id = 'avatars'") == []
        async with owner.transaction():
            # Storage refuses direct deletes unless asked (storage.protect_delete).
            await owner.execute("select set_config('storage.allow_delete_query', 'true', true)")
            await owner.execute("delete from storage.objects where name = any($1::text[])", [mine, theirs])


async def test_where_the_migrating_role_may_not_touch_storage_the_migrations_apply_and_say_what_to_do(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Today's projects: `postgres` does not own storage.objects (nor may it write buckets
    past RLS); the bucket and policy statements must not abort the deploy."""
    async with supabase_project(database_url) as project:
        await project.admin.execute(f"revoke supabase_storage_admin from {project.role}")
        with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
            applied = await migrate(project.dsn)
        await assert_fully_migrated(project, applied)
        notices = [m for m in caplog.messages if "avatars" in m and "NOTICE" in m]
        assert any("Storage > Policies" in n for n in notices), notices
        assert (
            await project.admin.fetchval(
                "select count(*) from pg_policies"
                " where schemaname = 'storage' and policyname = 'avatars_read_own_images'"
            )
            == 0
        )


async def test_where_it_may_the_bucket_and_policy_are_made(database_url: str) -> None:
    async with supabase_project(database_url) as project:
        await assert_fully_migrated(project, await migrate(project.dsn))
        assert await project.admin.fetchval("select count(*) from storage.buckets where id = 'avatars'") == 1
        assert (
            await project.admin.fetchval(
                "select count(*) from pg_policies"
                " where schemaname = 'storage' and policyname = 'avatars_read_own_images'"
            )
            == 1
        )
