-- Declarative schema: the live definition of data portability (docs/portability.md): a
-- user's export (GET /me/export) taken one at a time and a few times a day, and imports
-- (POST /me/import) recorded per archive so the same archive is imported once.
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration.
-- tests/core/test_schema_files.py fails while the two disagree.
--
-- An export reads everything in one read-only repeatable-read transaction (one snapshot)
-- as the user, so RLS decides what it holds; what it takes here is a lease (a row, not a
-- session lock: it must hold across the statements of a transaction pooler) and a count.

-- The export each user is taking: one at a time. A lease whose time ran out, or whose
-- worker's liveness row expired, no longer counts (its worker died mid-export).
create table avatar_chat.exports (
  user_id uuid not null,
  token uuid not null default gen_random_uuid(),
  worker_id bigint,
  started_at timestamptz not null default now(),
  expires_at timestamptz not null,
  day date not null,
  today integer not null default 1,
  constraint exports_pkey primary key (user_id),
  constraint exports_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table avatar_chat.exports is
  'Each user''s latest export: its lease (one at a time) and how many they took on its UTC day.';
revoke all on avatar_chat.exports from public, anon, authenticated;

-- begin_export: take the user's export lease for p_lease_s seconds and count it against
-- p_per_day (0: no daily limit). Errors: AC429 export_in_progress (a live export of this
-- user runs; DETAIL retry_after), AC429 export_limited (p_per_day exports today already;
-- DETAIL retry_after until the next UTC day). Answers the lease's token for end_export.
create function avatar_chat.begin_export(
  claims text, p_worker_id bigint, p_lease_s double precision, p_per_day integer
)
returns uuid
language plpgsql
volatile
set search_path = ''
as $$
declare
  me uuid;
  live_workers bigint[] := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  held avatar_chat.exports;
  today date := (now() at time zone 'UTC')::date;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);  -- the leases are the API's
  select * into held from avatar_chat.exports e where e.user_id = me for update;
  if found and held.expires_at > now() and (held.worker_id is null or held.worker_id = any (live_workers)) then
    raise exception 'An export of your data is already being made; retry when it is done.'
      using errcode = 'AC429', hint = 'export_in_progress',
            detail = json_build_object('retry_after', greatest(1, ceil(extract(epoch from held.expires_at - now())))::integer)::text;
  end if;
  if p_per_day > 0 and found and held.day = today and held.today >= p_per_day then
    raise exception 'You have exported your data the most times a day allows; retry tomorrow.'
      using errcode = 'AC429', hint = 'export_limited',
            detail = json_build_object(
              'retry_after', greatest(1, ceil(extract(epoch from ((today + 1)::timestamp at time zone 'UTC') - now())))::integer,
              'allowed', p_per_day
            )::text;
  end if;
  insert into avatar_chat.exports as e (user_id, worker_id, expires_at, day, today)
  values (me, p_worker_id, now() + make_interval(secs => p_lease_s), today, 1)
  on conflict (user_id) do update
    set token = gen_random_uuid(), worker_id = excluded.worker_id, started_at = now(),
        expires_at = excluded.expires_at, day = excluded.day,
        today = case when e.day = excluded.day then e.today + 1 else 1 end
  returning e.token into held.token;
  return held.token;
end
$$;
revoke all on function avatar_chat.begin_export(text, bigint, double precision, integer) from public, anon, authenticated;

-- end_export: the export is done (sent, failed or its client went away): its lease ends
-- (the day's count stays). Run by the API's own connection.
create function avatar_chat.end_export(p_user_id uuid, p_token uuid)
returns void
language sql
volatile
set search_path = ''
as $$
  update avatar_chat.exports e set expires_at = now() where e.user_id = p_user_id and e.token = p_token;
$$;
revoke all on function avatar_chat.end_export(uuid, uuid) from public, anon, authenticated;
