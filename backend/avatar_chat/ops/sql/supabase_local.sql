-- The pieces of a Supabase project that a plain PostgreSQL lacks, made as a new project
-- (created after 2026-05-30) has them, so that the migrations in supabase/migrations/ run
-- unchanged on the embedded database and on a test server, and fail here where they
-- would fail in the cloud. `avatar-chat migrate` applies this file only when the database
-- has no `auth` schema, which is never the case on a real Supabase project.
--
-- Sources: github.com/supabase/postgres (roles, grants, publication: the init scripts
-- under migrations/db/), github.com/supabase/auth (the auth functions) and
-- github.com/supabase/storage (the storage schema, migrations/tenant/). Where a body is
-- Supabase's it is copied verbatim (tests/ops/test_supabase_local.py compares them).
--
-- No default privileges: new projects no longer grant what is created in `public` to
-- anon, authenticated and service_role ("Default privileges for new entities", off by
-- default since 2026-05-30), so only the explicit grants of the migrations count, here
-- as in the cloud. The connecting role plays Supabase's `postgres`.

do $$
begin
  -- supabase/postgres migrations/db/init-scripts/00000000000000-initial-schema.sql
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  -- The owners of the auth and storage schemas (init-scripts 00000000000001-auth-schema.sql
  -- and 00000000000002-storage-schema.sql create them as login users for their services;
  -- nothing logs in as them here).
  if not exists (select from pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'supabase_storage_admin') then
    create role supabase_storage_admin nologin noinherit;
  end if;
end
$$;

-- The connecting role switches to the API roles per transaction, as PostgREST does; and
-- `postgres` is a member of the auth and storage owners (supabase/postgres
-- migrations/db/migrations/20220609081115_grant-supabase-auth-admin-and-supabase-storage-admin-to-postgres.sql;
-- today's projects give `postgres` the same reach over auth.users and storage.objects
-- policies through supautils.policy_grants).
do $$
begin
  execute format('grant anon, authenticated, service_role to %I', current_user);
  execute format('grant supabase_auth_admin, supabase_storage_admin to %I', current_user);
end
$$;

-- Auth ------------------------------------------------------------------------------

create schema if not exists auth authorization supabase_auth_admin;
grant usage on schema auth to anon, authenticated, service_role;

-- A local stand-in for Supabase Auth's users table: the columns this backend uses.
create table if not exists auth.users (
  id uuid primary key,
  email varchar(255),
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table auth.users is 'Local stand-in for Supabase Auth users (embedded mode only).';
alter table auth.users owner to supabase_auth_admin;

-- auth.uid(), auth.role(), auth.email() and auth.jwt() as Supabase Auth defines them, copied
-- verbatim from github.com/supabase/auth migrations/20220224000811_update_auth_functions.up.sql
-- and migrations/20220531120530_add_auth_jwt_function.up.sql. Like Supabase's they set no
-- search_path: a SQL function with a SET clause is never inlined, and these are called
-- in every RLS policy (pg_catalog is always searched first, so nothing can shadow what
-- they call). Execute stays granted to PUBLIC, as Postgres and Supabase leave it.
create or replace function auth.uid() 
returns uuid 
language sql stable
as $$
  select 
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() 
returns text 
language sql stable
as $$
  select 
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() 
returns text 
language sql stable
as $$
  select 
  coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create or replace function auth.jwt()
returns jsonb
language sql stable
as $$
  select 
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

comment on function auth.uid() is 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
comment on function auth.role() is 'Deprecated. Use auth.jwt() -> ''role'' instead.';
comment on function auth.email() is 'Deprecated. Use auth.jwt() -> ''email'' instead.';
alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.email() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;

-- Realtime --------------------------------------------------------------------------

-- Supabase Realtime streams the tables added to this publication (initial-schema.sql).
do $$
begin
  if not exists (select from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;

-- Storage ---------------------------------------------------------------------------

-- What a migration or an RLS policy may touch of Supabase Storage, as the storage
-- service's migrations (github.com/supabase/storage migrations/tenant/, through 0063)
-- leave it: the tables with their columns in the service's order, keys and indexes, RLS
-- on, the grants of 0046 and 0049, the path helpers, and the trigger (0055) that refuses
-- direct deletes (objects are deleted through the Storage API, which removes the files
-- too). Not the service's own tables (migrations, multipart uploads, analytics and
-- vector buckets) nor its search functions. All of it owned by supabase_storage_admin.
create schema if not exists storage authorization supabase_storage_admin;
grant usage on schema storage to anon, authenticated, service_role;

do $$
begin
  if to_regtype('storage.buckettype') is null then
    create type storage.buckettype as enum ('STANDARD', 'ANALYTICS', 'VECTOR');  -- 0038, 0044
  end if;
end
$$;

create table if not exists storage.buckets (
  id text not null,
  name text not null,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  public boolean default false,                                      -- 0008
  avif_autodetection boolean default false,                          -- 0012
  file_size_limit bigint,                                            -- 0013, 0014
  allowed_mime_types text[],                                         -- 0013
  owner_id text,                                                     -- 0018
  type storage.buckettype not null default 'STANDARD',               -- 0038
  versioning_status text not null default 'DISABLED',                -- 0062
  constraint buckets_pkey primary key (id),
  constraint buckets_versioning_status_check
    check (versioning_status in ('DISABLED', 'ENABLED', 'SUSPENDED')),
  constraint buckets_versioning_standard_only_check
    check (type = 'STANDARD' or versioning_status = 'DISABLED'),
  constraint buckets_versioning_dark_check check (versioning_status = 'DISABLED')
);
create unique index if not exists bname on storage.buckets using btree (name);
comment on column storage.buckets.owner is 'Field is deprecated, use owner_id instead';

create table if not exists storage.objects (
  id uuid not null default gen_random_uuid(),
  bucket_id text,
  name text,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(),
  metadata jsonb,
  path_tokens text[] generated always as (string_to_array(name, '/')) stored,  -- 0003
  version text,                                                      -- 0016
  owner_id text,                                                     -- 0018
  user_metadata jsonb,                                               -- 0025
  archived_at timestamptz,                                           -- 0062
  is_delete_marker boolean not null default false,                   -- 0062
  is_versioned boolean not null default false,                       -- 0062
  constraint objects_pkey primary key (id),
  constraint "objects_bucketId_fkey" foreign key (bucket_id) references storage.buckets (id)
);
create unique index if not exists bucketid_objname on storage.objects using btree (bucket_id, name);
create index if not exists name_prefix_search on storage.objects (name text_pattern_ops);
create index if not exists idx_objects_bucket_id_name on storage.objects (bucket_id, (name collate "C"));
create index if not exists idx_objects_bucket_id_name_lower
  on storage.objects (bucket_id, (lower(name) collate "C"));            -- 0051
comment on column storage.objects.owner is 'Field is deprecated, use owner_id instead';

alter table storage.buckets enable row level security;                -- 0007
alter table storage.objects enable row level security;

-- 0046 and 0049 (`postgres` with grant option).
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;
grant all on storage.buckets, storage.objects to current_user with grant option;

-- The path helpers policies use, verbatim from 0060 (extension, foldername) and 0061
-- (filename).
CREATE OR REPLACE FUNCTION storage.extension(name text)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE
AS $function$
DECLARE
    _parts text[];
    _filename text;
BEGIN
    -- Split on "/" to get path segments
    SELECT string_to_array(name, '/') INTO _parts;
    -- Get the last path segment (the actual filename)
    SELECT _parts[array_length(_parts, 1)] INTO _filename;
    -- Extract extension: reverse, split on '.', then reverse again
    RETURN reverse(split_part(reverse(_filename), '.', 1));
END
$function$;

CREATE OR REPLACE FUNCTION storage.foldername(name text)
    RETURNS text[]
    LANGUAGE plpgsql
    IMMUTABLE
AS $function$
DECLARE
    _parts text[];
BEGIN
    -- Split on "/" to get path segments
    SELECT string_to_array(name, '/') INTO _parts;
    -- Return everything except the last segment
    RETURN _parts[1 : array_length(_parts,1) - 1];
END
$function$;

CREATE OR REPLACE FUNCTION storage.filename(name text)
    RETURNS text
    LANGUAGE plpgsql
    IMMUTABLE
AS $function$
DECLARE
    _parts text[];
BEGIN
    SELECT string_to_array(name, '/') INTO _parts;
    RETURN _parts[array_length(_parts, 1)];
END
$function$;

-- 0055, verbatim.
CREATE OR REPLACE FUNCTION storage.protect_delete()
RETURNS TRIGGER
LANGUAGE plpgsql
AS $$
BEGIN
    -- Check if storage.allow_delete_query is set to 'true'
    IF COALESCE(current_setting('storage.allow_delete_query', true), 'false') != 'true' THEN
        RAISE EXCEPTION 'Direct deletion from storage tables is not allowed. Use the Storage API instead.'
            USING HINT = 'This prevents accidental data loss from orphaned objects.',
                  ERRCODE = '42501';
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS protect_buckets_delete ON storage.buckets;
CREATE TRIGGER protect_buckets_delete
    BEFORE DELETE ON storage.buckets
    FOR EACH STATEMENT
    EXECUTE FUNCTION storage.protect_delete();

DROP TRIGGER IF EXISTS protect_objects_delete ON storage.objects;
CREATE TRIGGER protect_objects_delete
    BEFORE DELETE ON storage.objects
    FOR EACH STATEMENT
    EXECUTE FUNCTION storage.protect_delete();

alter type storage.buckettype owner to supabase_storage_admin;
alter table storage.buckets owner to supabase_storage_admin;
alter table storage.objects owner to supabase_storage_admin;
alter function storage.foldername(text) owner to supabase_storage_admin;
alter function storage.filename(text) owner to supabase_storage_admin;
alter function storage.extension(text) owner to supabase_storage_admin;
alter function storage.protect_delete() owner to supabase_storage_admin;
