"""The migration runner: idempotent, recorded like the Supabase CLI, local pieces only once."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
import pytest

from avatar_chat.ops.migrate import default_migrations_dir, discover, ensure_supabase_pieces, migrate
from tests.support.databases import fresh_database


async def test_history_matches_the_migration_files(owner: asyncpg.Connection) -> None:
    files = discover(default_migrations_dir())
    rows = await owner.fetch(
        "select version, name, statements from supabase_migrations.schema_migrations order by version"
    )
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in files]
    assert all(r["statements"] == m.statements for r, m in zip(rows, files, strict=True))


async def test_migrate_again_is_a_no_op_also_when_run_concurrently(database_url: str) -> None:
    results = await asyncio.gather(*(migrate(database_url) for _ in range(3)))
    assert results == [[], [], []]


async def test_supabase_pieces_are_not_reapplied_where_auth_exists(owner: asyncpg.Connection) -> None:
    assert await ensure_supabase_pieces(owner) is False  # as on a real Supabase project
    roles = await owner.fetch(
        "select rolname, rolcanlogin, rolbypassrls from pg_roles"
        " where rolname in ('anon', 'authenticated', 'service_role') order by rolname"
    )
    assert [(r["rolname"], r["rolcanlogin"], r["rolbypassrls"]) for r in roles] == [
        ("anon", False, False),
        ("authenticated", False, False),
        ("service_role", False, True),
    ]
    assert (
        await owner.fetchval("select count(*) from pg_publication where pubname = 'supabase_realtime'") == 1
    )


async def test_auth_functions_read_claims_like_supabase(owner: asyncpg.Connection) -> None:
    async with owner.transaction():
        claims = '{"sub":"6f1d3c1e-6a4e-4c43-9a53-2f3f5b0b9c11","role":"authenticated","email":"a@b.c"}'
        await owner.execute("select set_config('request.jwt.claims', $1, true)", claims)
        row = await owner.fetchrow(
            "select auth.uid()::text as uid, auth.role() as role, auth.jwt() ->> 'email' as email"
        )
    assert row is not None
    assert dict(row.items()) == {
        "uid": "6f1d3c1e-6a4e-4c43-9a53-2f3f5b0b9c11",
        "role": "authenticated",
        "email": "a@b.c",
    }


async def test_every_function_has_a_fixed_search_path(owner: asyncpg.Connection) -> None:
    loose = await owner.fetch(
        "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'avatar_chat')"
        " and not exists (select from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')"
    )
    assert [r["proname"] for r in loose] == []


async def test_every_public_table_has_rls_and_comments(owner: asyncpg.Connection) -> None:
    rows = await owner.fetch(
        "select c.relname, c.relrowsecurity, obj_description(c.oid) as comment"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind = 'r'"
    )
    assert rows
    for row in rows:
        assert row["relrowsecurity"], row["relname"]
        assert row["comment"], row["relname"]


async def test_every_foreign_key_has_an_index(owner: asyncpg.Connection) -> None:
    """Cascading deletes (a user, a conversation) must not scan whole tables."""
    unindexed = await owner.fetch(
        """
        select c.conrelid::regclass::text as tbl, c.conname
          from pg_constraint c
          join pg_namespace n on n.oid = c.connamespace
         where c.contype = 'f' and n.nspname in ('public', 'avatar_chat')
           and not exists (
             select from pg_index i
              where i.indrelid = c.conrelid
                and (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] = c.conkey
           )
        """
    )
    assert [(r["tbl"], r["conname"]) for r in unindexed] == []


async def test_messages_are_published_for_supabase_realtime(owner: asyncpg.Connection) -> None:
    published = await owner.fetch(
        "select tablename from pg_publication_tables"
        " where pubname = 'supabase_realtime' and schemaname = 'public'"
    )
    assert "messages" in {r["tablename"] for r in published}


async def test_a_migration_runs_as_the_cli_runs_it(database_url: str, tmp_path: Path) -> None:
    """Statement by statement as split by the CLI's splitter, in one transaction with its
    history row: a failing statement is named and leaves nothing of its migration."""
    (tmp_path / "20990101000000_first.sql").write_text(
        "-- two tables\ncreate table public.t1 (a int);\ncreate table public.t2 (b int);\n"
    )
    (tmp_path / "20990101000001_second.sql").write_text("create table public.t3 (c int);\nselect 1 / 0;\n")
    async with fresh_database(database_url) as dsn:
        with pytest.raises(asyncpg.DivisionByZeroError) as failure:
            await migrate(dsn, tmp_path)
        assert "in migration 20990101000001_second, statement 2 of 2:" in failure.value.__notes__
        assert "select 1 / 0" in failure.value.__notes__
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "select version, name, statements from supabase_migrations.schema_migrations"
            )
            assert [tuple(r) for r in rows] == [
                (
                    "20990101000000",
                    "first",
                    ["-- two tables\ncreate table public.t1 (a int)", "create table public.t2 (b int)"],
                )
            ]
            assert await conn.fetchval("select to_regclass('public.t2')::text") == "t2"
            assert await conn.fetchval("select to_regclass('public.t3')") is None
        finally:
            await conn.close()


async def test_a_migration_the_cli_would_split_wrongly_fails_here_too(
    database_url: str, tmp_path: Path
) -> None:
    """`$é$` is a valid dollar quote for Postgres, not for the CLI, which cuts the function
    at the `;` inside it: `supabase db push` would fail, so `avatar-chat migrate` does."""
    (tmp_path / "20990101000000_tag.sql").write_text(
        "create function public.f() returns int language sql as $é$ select 1; $é$;\n"
    )
    async with fresh_database(database_url) as dsn:
        with pytest.raises(asyncpg.PostgresSyntaxError, match="unterminated dollar-quoted string"):
            await migrate(dsn, tmp_path)


async def test_notices_of_a_migration_are_logged(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "20990101000000_notice.sql").write_text(
        "do $$ begin raise notice 'do this by hand: %', 'grant x'; end $$;\n"
    )
    async with fresh_database(database_url) as dsn:
        with caplog.at_level(logging.WARNING, logger="avatar_chat.ops.migrate"):
            assert await migrate(dsn, tmp_path) == ["20990101000000"]
    assert "migration 20990101000000_notice: NOTICE: do this by hand: grant x" in caplog.messages
