"""The local bootstrap (ops/sql/supabase_local.sql) is a new Supabase project in miniature.

No default privileges (a migration that forgets a grant fails here as in the cloud), the
auth functions exactly as Supabase Auth defines them, and the part of Supabase Storage's
schema that migrations and policies may touch, as the storage service leaves it. The
Supabase sources compared with are copied in testdata/, each with where it comes from.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from avatar_chat.ops.migrate import ensure_supabase_pieces
from tests.support.databases import fresh_database

TESTDATA = Path(__file__).parent / "testdata"

# What makes two functions the same function, body included.
FUNCTIONS = """
    select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as key,
           p.prosrc as body, l.lanname as language, pg_get_function_result(p.oid) as result,
           p.provolatile::text as volatility, p.proconfig as config, p.prosecdef as security_definer,
           p.proisstrict as strict, p.proleakproof as leakproof, p.proparallel::text as parallel,
           obj_description(p.oid, 'pg_proc') as comment
      from pg_proc p join pg_language l on l.oid = p.prolang
     where p.pronamespace = $1::regnamespace
"""


async def functions_of(conn: asyncpg.Connection, schema: str) -> dict[str, dict[str, object]]:
    rows = await conn.fetch(FUNCTIONS, schema)
    return {row["key"]: {k: v for k, v in row.items() if k != "key"} for row in rows}


@pytest.fixture(scope="module")
async def supabase_functions(database_url: str) -> dict[str, dict[str, dict[str, object]]]:
    """Supabase's own definitions, created in an empty database: {schema: {function: ...}}."""
    async with fresh_database(database_url) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("create schema auth; create schema storage")
            await conn.execute((TESTDATA / "supabase_auth_functions.sql").read_text("utf-8"))
            await conn.execute((TESTDATA / "supabase_storage_functions.sql").read_text("utf-8"))
            return {schema: await functions_of(conn, schema) for schema in ("auth", "storage")}
        finally:
            await conn.close()


@pytest.fixture
async def bootstrapped(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A fresh database with the local bootstrap only (no migrations), as its owner."""
    async with fresh_database(database_url) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            assert await ensure_supabase_pieces(conn) is True
            yield conn
        finally:
            await conn.close()


async def test_auth_functions_are_supabase_s(
    owner: asyncpg.Connection, supabase_functions: dict[str, dict[str, dict[str, object]]]
) -> None:
    local = await functions_of(owner, "auth")
    assert set(local) == {"uid()", "role()", "email()", "jwt()"}
    assert local == supabase_functions["auth"]
    assert all(f["config"] is None for f in local.values())  # no `set search_path`: inlinable


async def test_auth_uid_is_inlined_into_queries(owner: asyncpg.Connection) -> None:
    """What Supabase's definitions buy: the planner inlines them (a function with a SET
    clause is never inlined), so a policy's `(select auth.uid())` costs one expression."""
    plan = "\n".join(r[0] for r in await owner.fetch("explain (verbose, costs off) select auth.uid()"))
    assert "current_setting('request.jwt.claim.sub'" in plan
    assert "auth.uid()" not in plan


async def test_auth_functions_read_claims_both_ways(owner: asyncpg.Connection) -> None:
    """request.jwt.claims (PostgREST 9+, this API) and the older request.jwt.claim.*."""
    user = uuid.uuid4()
    async with owner.transaction():
        await owner.execute(
            "select set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": str(user), "role": "authenticated", "email": "a@example.test"}),
        )
        row = await owner.fetchrow("select auth.uid(), auth.role(), auth.email(), auth.jwt() ->> 'sub'")
        assert row is not None and tuple(row) == (user, "authenticated", "a@example.test", str(user))
    async with owner.transaction():
        await owner.execute("select set_config('request.jwt.claim.sub', $1, true)", str(user))
        assert await owner.fetchval("select auth.uid()") == user


async def test_storage_helpers_are_supabase_s(
    owner: asyncpg.Connection, supabase_functions: dict[str, dict[str, dict[str, object]]]
) -> None:
    local = await functions_of(owner, "storage")
    for key, supabase in supabase_functions["storage"].items():
        assert local[key] == supabase, key
    row = await owner.fetchrow(
        "select storage.foldername(p), storage.filename(p), storage.extension(p)"
        " from (values ('u1/pics/a.b.png')) v (p)"
    )
    assert row is not None and tuple(row) == (["u1", "pics"], "a.b.png", "png")


async def test_no_default_privileges(bootstrapped: asyncpg.Connection) -> None:
    """As on a new project: what a migration creates is reachable by the API roles only
    through the grants it writes."""
    assert await bootstrapped.fetch("select defaclrole::regrole, defaclnamespace from pg_default_acl") == []
    await bootstrapped.execute(
        "create table public.forgot_grants (id bigserial primary key); create function public.f() returns int"
        " language sql as 'select 1'"
    )
    reach = await bootstrapped.fetch(
        "select r.rolname, has_table_privilege(r.rolname, 'public.forgot_grants', 'select, insert') as tbl,"
        " has_sequence_privilege(r.rolname, 'public.forgot_grants_id_seq', 'usage') as seq"
        " from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role') order by 1"
    )
    assert [tuple(r) for r in reach] == [
        ("anon", False, False),
        ("authenticated", False, False),
        ("service_role", False, False),
    ]


async def test_roles_and_owners_are_supabase_s(bootstrapped: asyncpg.Connection) -> None:
    owners = await bootstrapped.fetch(
        "select n.nspname, c.relname, c.relowner::regrole::text as owner, c.relrowsecurity as rls"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname in ('auth', 'storage') and c.relkind = 'r' order by 1, 2"
    )
    assert [tuple(r) for r in owners] == [
        ("auth", "users", "supabase_auth_admin", False),
        ("storage", "buckets", "supabase_storage_admin", True),
        ("storage", "objects", "supabase_storage_admin", True),
    ]
    function_owners = await bootstrapped.fetch(
        "select distinct pronamespace::regnamespace::text, proowner::regrole::text from pg_proc"
        " where pronamespace in ('auth'::regnamespace, 'storage'::regnamespace) order by 1"
    )
    assert [tuple(r) for r in function_owners] == [
        ("auth", "supabase_auth_admin"),
        ("storage", "supabase_storage_admin"),
    ]
    member_of = await bootstrapped.fetch(
        "select b.rolname from pg_auth_members m join pg_roles b on b.oid = m.roleid"
        " where m.member = (select oid from pg_roles where rolname = current_user) order by 1"
    )
    assert {r[0] for r in member_of} >= {
        "anon",
        "authenticated",
        "service_role",
        "supabase_auth_admin",
        "supabase_storage_admin",
    }


async def test_storage_tables_as_the_storage_service_leaves_them(bootstrapped: asyncpg.Connection) -> None:
    columns = await bootstrapped.fetch(
        "select table_name, array_agg(column_name::text order by ordinal_position) as names"
        " from information_schema.columns where table_schema = 'storage' group by 1 order by 1"
    )
    assert {r["table_name"]: r["names"] for r in columns} == {
        "buckets": [
            "id",
            "name",
            "owner",
            "created_at",
            "updated_at",
            "public",
            "avif_autodetection",
            "file_size_limit",
            "allowed_mime_types",
            "owner_id",
            "type",
            "versioning_status",
        ],
        "objects": [
            "id",
            "bucket_id",
            "name",
            "owner",
            "created_at",
            "updated_at",
            "last_accessed_at",
            "metadata",
            "path_tokens",
            "version",
            "owner_id",
            "user_metadata",
            "archived_at",
            "is_delete_marker",
            "is_versioned",
        ],
    }
    grants = await bootstrapped.fetch(
        "select r.rolname, bool_and(has_table_privilege(r.rolname, t, 'select, insert, update, delete'))"
        " from pg_roles r, unnest(array['storage.buckets', 'storage.objects']) t"
        " where r.rolname in ('anon', 'authenticated', 'service_role') group by 1 order by 1"
    )
    assert [tuple(r) for r in grants] == [("anon", True), ("authenticated", True), ("service_role", True)]
    # `postgres` (here the connecting role) may pass them on (0049).
    assert await bootstrapped.fetchval(
        "select has_table_privilege('storage.objects', 'select, insert, update, delete with grant option')"
    )


async def test_a_storage_policy_on_folders_works_for_authenticated(bootstrapped: asyncpg.Connection) -> None:
    """What a migration adding a bucket and a per-user folder policy relies on."""
    conn = bootstrapped
    mine, theirs = uuid.uuid4(), uuid.uuid4()
    await conn.execute("insert into auth.users (id) values ($1), ($2)", mine, theirs)
    await conn.execute(
        """
        insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
        values ('pics', 'pics', false, 1048576, array['image/webp']);
        create policy pics_read_own on storage.objects for select to authenticated
          using (bucket_id = 'pics' and (storage.foldername(name))[1] = (select auth.uid())::text);
        """
    )
    await conn.execute(
        "insert into storage.objects (bucket_id, name, owner_id) values ('pics', $1, $3), ('pics', $2, $4)",
        f"{mine}/512.webp",
        f"{theirs}/512.webp",
        str(mine),
        str(theirs),
    )
    for role, claims, expected in [
        ("authenticated", {"sub": str(mine), "role": "authenticated"}, [f"{mine}/512.webp"]),
        ("anon", {"role": "anon"}, []),
    ]:
        async with conn.transaction():
            await conn.execute(
                "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
                role,
                json.dumps(claims),
            )
            assert [r[0] for r in await conn.fetch("select name from storage.objects")] == expected
            tokens = await conn.fetchval("select path_tokens from storage.objects")
            assert tokens == ([str(mine), "512.webp"] if expected else None)


async def test_storage_refuses_direct_deletes(bootstrapped: asyncpg.Connection) -> None:
    """As Supabase Storage does (its migration 0055): files go through the Storage API."""
    await bootstrapped.execute("insert into storage.buckets (id, name) values ('b', 'b')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="Use the Storage API instead"):
        await bootstrapped.execute("delete from storage.buckets")
    async with bootstrapped.transaction():
        await bootstrapped.execute("select set_config('storage.allow_delete_query', 'true', true)")
        assert await bootstrapped.execute("delete from storage.buckets") == "DELETE 1"
