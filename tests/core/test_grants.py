"""Every object the API roles use is granted explicitly, and anon gets nothing.

The local bootstrap, like a new Supabase project, has no default privileges, so an object
reaches the API roles only through a migration's own grants. This names, in one list,
what a migration forgot (or gave away): checked on the migrated test database, and shown
to catch each mistake on a database made to have them all.
"""

from __future__ import annotations

import asyncpg

from avatar_chat.ops.migrate import ensure_supabase_pieces
from tests.support.databases import fresh_database

API_SCHEMAS = ["public", "avatar_chat"]

PROBLEMS = """
with tables as (
  select c.oid, n.nspname || '.' || c.relname as name, c.relkind, c.relrowsecurity, c.relacl
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm', 'f')
)
-- In public (what the Data API exposes): RLS on, grants written out, service_role whole,
-- authenticated able to reach it.
select name || ': row level security is off' from tables
 where name like 'public.%' and relkind in ('r', 'p') and not relrowsecurity
union all
select name || ': no explicit grants' from tables where name like 'public.%' and relacl is null
union all
select name || ': service_role may not select, insert, update and delete' from tables
 where name like 'public.%'
   and not has_table_privilege('service_role', oid, 'select, insert, update, delete')
union all
select name || ': authenticated may not use it' from tables
 where name like 'public.%'
   and not has_any_column_privilege('authenticated', oid, 'select, insert, update, references')
   and not has_table_privilege('authenticated', oid, 'delete')
union all
-- anon: nothing at all, anywhere here.
select name || ': anon may use it' from tables
 where has_table_privilege('anon', oid, 'select, insert, update, delete, truncate, references, trigger')
    or has_any_column_privilege('anon', oid, 'select, insert, update, references')
union all
select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
       || ': anon may execute it'
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = any($1::text[]) and has_function_privilege('anon', p.oid, 'execute')
   and has_schema_privilege('anon', n.oid, 'usage')
union all
select 'schema ' || nspname || ': anon may use it' from pg_namespace
 where nspname = any($1::text[]) and nspname <> 'public' and has_schema_privilege('anon', oid, 'usage')
union all
select n.nspname || '.' || s.relname || ': anon may use the sequence'
  from pg_class s join pg_namespace n on n.oid = s.relnamespace
 where n.nspname = any($1::text[]) and s.relkind = 'S'
   and case when s.relkind = 'S' then has_sequence_privilege('anon', s.oid, 'usage, select, update') end
union all
-- A sequence behind a column default (serial, nextval) must be usable by whoever may
-- insert into the table (identity columns need no grant). The CASEs keep the privilege
-- functions off rows that are not sequences, whatever order the planner picks.
select distinct t.name || ': ' || r.rolname || ' may insert but not use sequence '
       || s.relnamespace::regnamespace::text || '.' || s.relname
  from tables t
  join pg_attrdef d on d.adrelid = t.oid
  join pg_depend dep on dep.classid = 'pg_attrdef'::regclass and dep.objid = d.oid
                    and dep.refclassid = 'pg_class'::regclass
  join pg_class s on s.oid = dep.refobjid and s.relkind = 'S'
  cross join (values ('authenticated'), ('service_role')) r (rolname)
 where has_any_column_privilege(r.rolname, t.oid, 'insert')
   and case when s.relkind = 'S' then not has_sequence_privilege(r.rolname, s.oid, 'usage') end
order by 1
"""


async def grant_problems(conn: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await conn.fetch(PROBLEMS, API_SCHEMAS)]


async def test_the_migrations_grant_what_the_api_needs_and_nothing_to_anon(owner: asyncpg.Connection) -> None:
    assert await grant_problems(owner) == []


async def test_the_check_catches_each_missing_or_excess_grant(database_url: str) -> None:
    async with fresh_database(database_url) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await ensure_supabase_pieces(conn)
            await conn.execute(
                """
                create table public.notes (id bigserial primary key, note text);
                grant insert (note), select on public.notes to authenticated;
                grant select on public.notes to anon;
                create table public.forgotten (id uuid primary key);
                alter table public.forgotten enable row level security;
                create function public.leaky() returns int language sql as 'select 1';
                create schema avatar_chat;
                grant usage on schema avatar_chat to anon;
                """
            )
            assert await grant_problems(conn) == [
                "public.forgotten: authenticated may not use it",
                "public.forgotten: no explicit grants",
                "public.forgotten: service_role may not select, insert, update and delete",
                "public.leaky(): anon may execute it",
                "public.notes: anon may use it",
                "public.notes: authenticated may insert but not use sequence public.notes_id_seq",
                "public.notes: row level security is off",
                "public.notes: service_role may not select, insert, update and delete",
                "schema avatar_chat: anon may use it",
            ]
        finally:
            await conn.close()
