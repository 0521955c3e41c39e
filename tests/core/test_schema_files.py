"""The declarative schemas in supabase/schemas/ are what the migrations build.

Two fresh databases on the test server: one built by the migrations, one by the schema
files in the order of `[db.migrations] schema_paths` in supabase/config.toml (both on
top of the local Supabase pieces). Their catalogs of `public` and `avatar_chat` must
agree object by object; a mismatch names the object and shows both sides.
"""

from __future__ import annotations

import asyncio
import difflib
import tomllib
from pathlib import Path

import asyncpg
import pytest

from avatar_chat.avatars.persona import PersonalityType
from avatar_chat.ops.migrate import ensure_supabase_pieces, migrate
from tests.support.databases import fresh_database

SUPABASE_DIR = Path(__file__).resolve().parents[2] / "supabase"
SCHEMAS = ["public", "avatar_chat"]

Entry = dict[str, object]
Catalog = dict[str, dict[str, Entry]]  # category -> object -> what it is

# Each query takes the schemas as $1 and returns one row per object: its name as `key`,
# then what describes it.
QUERIES: dict[str, str] = {
    "tables": """
        select n.nspname || '.' || c.relname as key, c.relkind::text as kind,
               c.relpersistence::text as persistence, c.reloptions as options,
               c.relreplident::text as replica_identity, c.relispartition as is_partition
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
    """,
    "columns": """
        select n.nspname || '.' || c.relname || '.' || a.attname as key,
               format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as not_null,
               pg_get_expr(d.adbin, d.adrelid) as default_expr, a.attidentity::text as identity,
               a.attgenerated::text as generated,
               (select co.collname from pg_collation co where co.oid = a.attcollation) as collation
          from pg_attribute a
          join pg_class c on c.oid = a.attrelid
          join pg_namespace n on n.oid = c.relnamespace
          left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where n.nspname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm', 'f')
           and a.attnum > 0 and not a.attisdropped
    """,
    "constraints": """
        select n.nspname || '.' || coalesce(c.relname, t.typname) || '.' || k.conname as key,
               k.contype::text as type, pg_get_constraintdef(k.oid) as definition
          from pg_constraint k
          join pg_namespace n on n.oid = k.connamespace
          left join pg_class c on c.oid = k.conrelid
          left join pg_type t on t.oid = k.contypid
         where n.nspname = any($1::text[])
    """,
    "indexes": """
        select n.nspname || '.' || i.relname as key, pg_get_indexdef(i.oid) as definition,
               x.indisreplident as replica_identity, x.indisclustered as clustered
          from pg_index x
          join pg_class i on i.oid = x.indexrelid
          join pg_namespace n on n.oid = i.relnamespace
         where n.nspname = any($1::text[])
    """,
    "functions": """
        select n.nspname || '.' || p.proname
               || '(' || pg_get_function_identity_arguments(p.oid) || ')' as key,
               p.prokind::text as kind, l.lanname as language,
               case when p.prokind in ('f', 'p') then pg_get_functiondef(p.oid) end as definition,
               p.prosecdef as security_definer, p.provolatile::text as volatility,
               p.proconfig as config, p.proisstrict as strict, p.proleakproof as leakproof,
               p.proparallel::text as parallel
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          join pg_language l on l.oid = p.prolang
         where n.nspname = any($1::text[])
    """,
    "triggers": """
        select n.nspname || '.' || c.relname || '.' || t.tgname as key,
               pg_get_triggerdef(t.oid) as definition, t.tgenabled::text as enabled
          from pg_trigger t
          join pg_class c on c.oid = t.tgrelid
          join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any($1::text[]) and not t.tgisinternal
    """,
    "row_level_security": """
        select n.nspname || '.' || c.relname as key, c.relrowsecurity as enabled,
               c.relforcerowsecurity as forced
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any($1::text[]) and c.relkind in ('r', 'p')
    """,
    "policies": """
        select schemaname || '.' || tablename || '.' || policyname as key, permissive,
               roles::text[] as roles, cmd, qual, with_check
          from pg_policies
         where schemaname = any($1::text[])
    """,
    # Types of their own: enums (with their labels), domains, composites; not the row
    # types of tables and not array types.
    "types": """
        select n.nspname || '.' || t.typname as key, t.typtype::text as kind,
               (select array_agg(e.enumlabel::text order by e.enumsortorder)
                  from pg_enum e where e.enumtypid = t.oid) as labels,
               case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) end as base_type
          from pg_type t
          join pg_namespace n on n.oid = t.typnamespace
          left join pg_class c on c.oid = t.typrelid
         where n.nspname = any($1::text[])
           and (c.oid is null or c.relkind = 'c')
           and not exists (select from pg_type a where a.typarray = t.oid)
    """,
    # Every privilege on every table, column, function, type and schema, whoever holds it
    # (PUBLIC, anon, authenticated, service_role, the owner). A missing ACL is the default.
    "grants": """
        with acls (key, acl) as (
          select n.nspname || '.' || c.relname,
                 coalesce(c.relacl, acldefault(case c.relkind when 'S' then 's' else 'r' end::"char",
                                               c.relowner))
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = any($1::text[]) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
          union all
          select n.nspname || '.' || c.relname || '.' || a.attname, a.attacl
            from pg_attribute a
            join pg_class c on c.oid = a.attrelid
            join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = any($1::text[]) and a.attnum > 0 and not a.attisdropped
             and a.attacl is not null
          union all
          select n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                 coalesce(p.proacl, acldefault('f', p.proowner))
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = any($1::text[])
          union all
          select n.nspname || '.' || t.typname, coalesce(t.typacl, acldefault('T', t.typowner))
            from pg_type t
            join pg_namespace n on n.oid = t.typnamespace
            left join pg_class c on c.oid = t.typrelid
           where n.nspname = any($1::text[]) and (c.oid is null or c.relkind = 'c')
             and not exists (select from pg_type a where a.typarray = t.oid)
          union all
          select 'schema ' || n.nspname, coalesce(n.nspacl, acldefault('n', n.nspowner))
            from pg_namespace n
           where n.nspname = any($1::text[])
        )
        select key,
               array(select coalesce(r.rolname::text, 'PUBLIC') || ' ' || x.privilege_type
                            || case when x.is_grantable then ' with grant option' else '' end
                       from aclexplode(acls.acl) x left join pg_roles r on r.oid = x.grantee
                      order by 1) as privileges
          from acls
    """,
    # Comments on anything in these schemas (tables, columns, types, functions, ...) and
    # on the schemas themselves.
    "comments": """
        select o.type || ' ' || o.identity as key, d.description
          from pg_description d, pg_identify_object(d.classoid, d.objoid, d.objsubid) o
         where o.schema = any($1::text[])
            or (o.type = 'schema' and o.identity = any($1::text[]))
            or (o.type in ('trigger', 'policy', 'rule', 'table constraint')
                and split_part(o.identity, ' on ', 2) ~ ('^(' || array_to_string($1::text[], '|') || ')\\.'))
    """,
    # The published columns as a set: their positions may differ (see "columns").
    "publication": """
        select schemaname || '.' || tablename as key,
               array(select a::text from unnest(attnames) a order by 1) as columns, rowfilter
          from pg_publication_tables
         where pubname = 'supabase_realtime' and schemaname = any($1::text[])
    """,
}

EXPECTED_TABLES = {
    "public.avatars",
    "public.conversations",
    "public.messages",
    "public.avatar_history",
    "public.conversation_summaries",
    "avatar_chat.limits",
    "avatar_chat.send_counters",
    "avatar_chat.image_upload_counters",
    "avatar_chat.workers",
    "avatar_chat.summary_claims",
    "public.user_safety",
    "avatar_chat.safety_events",
    "avatar_chat.safety_events_id_seq",
    "avatar_chat.interactions",
    "avatar_chat.safety_counts",
    "public.plans",
    "public.user_plans",
    "public.usage_records",
    "public.usage_records_id_seq",
    "avatar_chat.usage_counters",
    "avatar_chat.usage_by_day",
    "avatar_chat.usage_by_model",
    "avatar_chat.usage_by_plan",
    "avatar_chat.exports",
    "avatar_chat.imports",
}
EXPECTED_FUNCTIONS = {
    "avatar_chat.act_as(claims text)",
    "avatar_chat.update_my_avatar(claims text, changes jsonb, if_match bigint[])",
    "avatar_chat.begin_turn(claims text, p_conversation_id uuid, p_content text,"
    " p_idempotency_key text, p_lease_s double precision, p_worker_id bigint,"
    " p_known_avatar_id uuid, p_known_avatar_version bigint, p_known_window_seq bigint,"
    " p_known_window_revision bigint, p_window_limit integer, p_known_summary_seq bigint,"
    " p_safety jsonb)",
    "avatar_chat.finish_turn(claims text, p_reply_id uuid, p_attempt integer, p_content text,"
    " p_status public.message_status, p_error_code text, p_persona_version bigint,"
    " p_personality public.personality_type, p_moderation jsonb, p_usage jsonb)",
    "avatar_chat.plan_of(p_user_id uuid, p_token_plan text, OUT plan_source text, OUT time_zone text,"
    " OUT plan public.plans)",
    "avatar_chat.record_usage(p_user_id uuid, p_conversation_id uuid, p_message_id uuid, p_usage jsonb,"
    " p_plan text)",
    "avatar_chat.my_usage(claims text)",
    "avatar_chat.safety_report(p_year integer)",
    "avatar_chat.messages_enforce_limits()",
}


def schema_files() -> list[Path]:
    """The schema files in `schema_paths` order, globs expanded as the Supabase CLI does."""
    config = tomllib.loads((SUPABASE_DIR / "config.toml").read_text("utf-8"))
    patterns: list[str] = config["db"]["migrations"]["schema_paths"]
    files: list[Path] = []
    for pattern in patterns:
        relative = pattern.removeprefix("./")
        if any(ch in relative for ch in "*?["):
            matches = sorted(SUPABASE_DIR.glob(relative))
        else:
            matches = [SUPABASE_DIR / relative]
            assert matches[0].is_file(), f"schema_paths lists {pattern}, which does not exist"
        files.extend(path for path in matches if path not in files)
    return files


async def read_catalog(conn: asyncpg.Connection) -> Catalog:
    await conn.execute("set search_path = ''")  # every name in the definitions schema-qualified
    catalog: Catalog = {}
    for category, query in QUERIES.items():
        entries: dict[str, Entry] = {}
        for row in await conn.fetch(query, SCHEMAS):
            key = row["key"]
            assert key not in entries, f"{category}: {key} twice"
            entries[key] = {name: value for name, value in row.items() if name != "key"}
        catalog[category] = entries
    return catalog


async def catalog_of_migrations(server_dsn: str) -> Catalog:
    async with fresh_database(server_dsn) as dsn:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            return await read_catalog(conn)
        finally:
            await conn.close()


async def catalog_of_schema_files(server_dsn: str) -> Catalog:
    async with fresh_database(server_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await ensure_supabase_pieces(conn)
            for path in schema_files():
                try:
                    async with conn.transaction():
                        await conn.execute(path.read_text("utf-8"))
                except asyncpg.PostgresError as exc:
                    exc.add_note(f"while applying {path.relative_to(SUPABASE_DIR.parent)}")
                    raise
            return await read_catalog(conn)
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def catalogs(database_url: str) -> tuple[Catalog, Catalog]:
    """(built by the migrations, built by the schema files)."""
    migrated, declared = await asyncio.gather(
        catalog_of_migrations(database_url), catalog_of_schema_files(database_url)
    )
    return migrated, declared


def describe_differences(category: str, migrated: dict[str, Entry], declared: dict[str, Entry]) -> str:
    """Which objects differ, and how; empty when none do."""
    lines: list[str] = []
    for key in sorted(migrated.keys() - declared.keys()):
        lines.append(f"  {key}: only in the migrations: {migrated[key]}")
    for key in sorted(declared.keys() - migrated.keys()):
        lines.append(f"  {key}: only in supabase/schemas/: {declared[key]}")
    for key in sorted(migrated.keys() & declared.keys()):
        if migrated[key] == declared[key]:
            continue
        lines.append(f"  {key}:")
        for field in sorted(migrated[key].keys() | declared[key].keys()):
            old, new = migrated[key].get(field), declared[key].get(field)
            if old == new:
                continue
            if isinstance(old, str) and isinstance(new, str) and "\n" in old + new:
                diff = difflib.unified_diff(
                    old.splitlines(), new.splitlines(), "migrations", "supabase/schemas", lineterm=""
                )
                lines.append(f"    {field}:")
                lines.extend(f"      {line}" for line in diff)
            else:
                lines.append(f"    {field}: migrations {old!r} != supabase/schemas {new!r}")
    if not lines:
        return ""
    return f"{category} differ between supabase/migrations/ and supabase/schemas/:\n" + "\n".join(lines)


def test_every_schema_file_is_listed_in_config() -> None:
    on_disk = sorted((SUPABASE_DIR / "schemas").glob("*.sql"))
    assert on_disk, "no supabase/schemas/*.sql"
    missing = [path.name for path in on_disk if path not in schema_files()]
    assert not missing, f"supabase/config.toml: add {missing} to [db.migrations] schema_paths"


def test_the_catalogs_are_not_trivial(catalogs: tuple[Catalog, Catalog]) -> None:
    migrated, _ = catalogs
    assert set(migrated["tables"]) == EXPECTED_TABLES
    assert set(migrated["functions"]) >= EXPECTED_FUNCTIONS
    assert migrated["types"]["public.personality_type"]["labels"] == [p.value for p in PersonalityType]
    assert set(migrated["publication"]) == {"public.messages", "public.conversations"}
    privileges = migrated["grants"]["public.messages.worker_id"]["privileges"]
    assert isinstance(privileges, list) and "authenticated INSERT" in privileges
    for category, entries in migrated.items():
        assert entries, f"no {category} in the migrated database"


@pytest.mark.parametrize("category", list(QUERIES))
def test_schema_files_match_the_migrations(catalogs: tuple[Catalog, Catalog], category: str) -> None:
    migrated, declared = catalogs
    assert migrated[category], f"no {category} in the migrated database: the comparison would be empty"
    differences = describe_differences(category, migrated[category], declared[category])
    if differences:
        pytest.fail(differences, pytrace=False)
