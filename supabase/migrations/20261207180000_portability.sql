-- Data portability (docs/portability.md): the export lease and daily count
-- (avatar_chat.exports, begin_export, end_export), imports (avatar_chat.imports,
-- begin_import, import_avatar, import_conversation, import_usage, finish_import), and the
-- stamping and limits triggers keeping an import's times and counting none of its
-- messages. Declarative definitions: supabase/schemas/60_portability.sql,
-- 20_conversations.sql, 40_limits.sql.

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

-- Imports (POST /me/import): each archive an account took, by its SHA-256, with what the
-- import did: the same archive again changes nothing and gets the same answer.
create table avatar_chat.imports (
  user_id uuid not null,
  archive_sha256 text not null,
  imported_at timestamptz not null default now(),
  result jsonb not null,
  constraint imports_pkey primary key (user_id, archive_sha256),
  constraint imports_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint imports_archive_sha256_format check (archive_sha256 ~ '^[0-9a-f]{64}$')
);
comment on table avatar_chat.imports is 'The archives each account imported (once each), and what each import did.';
revoke all on avatar_chat.imports from public, anon, authenticated;

-- An import runs in one transaction as the API's connecting role, after act_as checked the
-- user: begin_import, import_avatar, import_conversation for each conversation,
-- import_usage, finish_import; any error rolls all of it back. The transaction is marked
-- (the transaction-local setting avatar_chat.importing, which no API role can set): the
-- stamping triggers then keep the archive's times, and the limits trigger counts no
-- model call (an imported message is not one). Every id is new; pg_temp.import_ids maps
-- the archive's ids to them for the usage records, and is dropped at commit.

-- begin_import: whether this account imported this archive before (its result), else null
-- and the import goes on, serialised per user (a transaction-scoped advisory lock: two
-- imports of one archive do not both run).
create function avatar_chat.begin_import(claims text, p_sha256 text)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  me uuid;
  earlier jsonb;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);
  perform pg_advisory_xact_lock(hashtextextended('avatar_chat.imports:' || me::text, 0));
  select i.result || jsonb_build_object('imported_at', i.imported_at) into earlier
    from avatar_chat.imports i where i.user_id = me and i.archive_sha256 = p_sha256;
  if earlier is not null then
    return earlier;
  end if;
  perform set_config('avatar_chat.importing', 'on', true);
  create temp table import_ids (old uuid primary key, new uuid not null) on commit drop;
  return null;
end
$$;
revoke all on function avatar_chat.begin_import(text, text) from public, anon, authenticated;

-- import_avatar: the archive's avatar (avatar.json: its fields, card and history) into the
-- account: when it has none, its versions are written in order (so the history and
-- persona_version numbers follow them, each with its time); with p_replace, the account's
-- avatar takes the archive's current name, personality and backstory as a new version
-- (its own history kept). Answers imported, replaced or kept.
create function avatar_chat.import_avatar(claims text, p_avatar jsonb, p_replace boolean)
returns text
language plpgsql
volatile
set search_path = ''
as $$
declare
  me uuid;
  mine public.avatars;
  v record;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);
  select * into mine from public.avatars a where a.user_id = me for update;
  if found and not p_replace then
    return 'kept';
  end if;
  if found then
    update public.avatars a
       set name = p_avatar ->> 'name', personality = (p_avatar ->> 'personality')::public.personality_type,
           backstory = p_avatar ->> 'backstory', card = nullif(p_avatar -> 'card', 'null'::jsonb)
     where a.id = mine.id;
    return 'replaced';
  end if;
  for v in select h.* from jsonb_to_recordset(p_avatar -> 'history')
             as h(version bigint, name text, personality public.personality_type, backstory text,
                  changed_at timestamptz)
            order by h.version
  loop
    if mine.id is null then
      -- The card (not versioned) comes with the first version: later ones carry it along.
      insert into public.avatars (user_id, name, personality, backstory, card)
      values (me, v.name, v.personality, v.backstory, nullif(p_avatar -> 'card', 'null'::jsonb))
      returning * into mine;
    else
      update public.avatars a set name = v.name, personality = v.personality, backstory = v.backstory
       where a.id = mine.id returning * into mine;
    end if;
    -- The version's own time (the stamping trigger wrote now).
    update public.avatar_history h set changed_at = v.changed_at where h.avatar_id = mine.id and h.version = mine.version;
  end loop;
  if mine.id is null then  -- an archive with no history: its current fields as version 1
    insert into public.avatars (user_id, name, personality, backstory, card)
    values (me, p_avatar ->> 'name', (p_avatar ->> 'personality')::public.personality_type, p_avatar ->> 'backstory',
            nullif(p_avatar -> 'card', 'null'::jsonb));
  end if;
  return 'imported';
end
$$;
revoke all on function avatar_chat.import_avatar(text, jsonb, boolean) from public, anon, authenticated;

-- import_conversation: one conversations/<id>.json: a new conversation with its messages in
-- the archive's seq order (numbered 1, 2... again), variants, statuses and times kept (a
-- reply still streaming when exported is interrupted), and its summary (the seq it covers
-- renumbered with them). Every reply_to must name a message of the same file.
-- Errors: AC422 archive_invalid (a duplicate id, a reply_to naming no message of it).
-- Answers how many messages it wrote.
create function avatar_chat.import_conversation(claims text, p_conversation jsonb)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  me uuid;
  conv uuid := gen_random_uuid();
  problem text;
  written integer;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);
  create temp table import_messages on commit drop as
  select x.*, gen_random_uuid() as new_id
    from jsonb_to_recordset(p_conversation -> 'messages') as x(
      id uuid, seq bigint, role public.message_role, content text, status public.message_status, reply_to uuid,
      variant integer, is_current boolean, persona_version bigint, personality public.personality_type,
      notice_kind public.notice_kind, error_code text, attempt integer, created_at timestamptz,
      updated_at timestamptz);
  select case
           when count(distinct m.id) <> count(*) or count(distinct m.seq) <> count(*) then 'a message id or seq appears twice'
           when bool_or(m.reply_to is not null and not exists (select from pg_temp.import_messages r where r.id = m.reply_to))
             then 'a reply names a message that is not in its conversation'
         end
    into problem from pg_temp.import_messages m;
  if problem is not null then
    raise exception 'The archive''s conversation % is not valid: %.', p_conversation ->> 'id', problem
      using errcode = 'AC422', hint = 'archive_invalid',
            detail = json_build_object('file', 'conversations/' || (p_conversation ->> 'id') || '.json',
                                       'problem', problem)::text;
  end if;
  insert into public.conversations (id, user_id, title, mode, created_at, updated_at)
  values (conv, me, p_conversation ->> 'title', (p_conversation ->> 'mode')::public.conversation_mode,
          (p_conversation ->> 'created_at')::timestamptz, (p_conversation ->> 'updated_at')::timestamptz);
  insert into pg_temp.import_ids (old, new) values ((p_conversation ->> 'id')::uuid, conv);
  insert into public.messages (id, conversation_id, user_id, role, content, status, reply_to, variant, is_current,
                               persona_version, personality, notice_kind, error_code, attempt, created_at, updated_at)
  select m.new_id, conv, me, m.role, m.content,
         case when m.status = 'streaming' then 'interrupted' else m.status end::public.message_status,
         r.new_id, m.variant, m.is_current, m.persona_version, m.personality, m.notice_kind, m.error_code, m.attempt,
         m.created_at, m.updated_at
    from pg_temp.import_messages m left join pg_temp.import_messages r on r.id = m.reply_to
   order by m.seq;
  get diagnostics written = row_count;
  insert into pg_temp.import_ids (old, new) select m.id, m.new_id from pg_temp.import_messages m;
  if p_conversation -> 'summary' is not null and jsonb_typeof(p_conversation -> 'summary') = 'object' then
    insert into public.conversation_summaries (conversation_id, user_id, covers_upto_seq, revision, content,
                                               updated_at)
    select conv, me,
           (select count(*) from pg_temp.import_messages m
             where m.seq <= (p_conversation -> 'summary' ->> 'covers_upto_seq')::bigint),
           0, p_conversation -> 'summary' ->> 'content', (p_conversation -> 'summary' ->> 'updated_at')::timestamptz;
  end if;
  -- The archive's last activity, which the inserts above moved to now.
  update public.conversations c set updated_at = (p_conversation ->> 'updated_at')::timestamptz where c.id = conv;
  drop table pg_temp.import_messages;
  return written;
end
$$;
revoke all on function avatar_chat.import_conversation(text, jsonb) from public, anon, authenticated;

-- import_usage: usage.json's records, their conversation and message ids mapped to the
-- imported ones (an id the archive does not hold, a row deleted before the export, maps to
-- null: a record never names a row it did not come with). Not added to the quota windows:
-- what was spent elsewhere is not spent here.
create function avatar_chat.import_usage(claims text, p_records jsonb)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  me uuid;
  added integer;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);
  insert into public.usage_records (user_id, conversation_id, message_id, kind, model, plan, calls, prompt_tokens,
                                    completion_tokens, source, status, created_at)
  select me, c.new, m.new, u.kind, u.model, u.plan, u.calls, u.prompt_tokens, u.completion_tokens, u.source,
         u.status, u.created_at
    from jsonb_to_recordset(p_records) as u(kind text, model text, plan text, calls integer, prompt_tokens integer,
                                             completion_tokens integer, source text, status text,
                                             created_at timestamptz, conversation_id uuid, message_id uuid)
    left join pg_temp.import_ids c on c.old = u.conversation_id
    left join pg_temp.import_ids m on m.old = u.message_id;
  get diagnostics added = row_count;
  return added;
end
$$;
revoke all on function avatar_chat.import_usage(text, jsonb) from public, anon, authenticated;

-- finish_import: record that this account imported this archive, and what it did.
create function avatar_chat.finish_import(claims text, p_sha256 text, p_result jsonb)
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
declare
  me uuid;
  at timestamptz;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);
  insert into avatar_chat.imports (user_id, archive_sha256, result) values (me, p_sha256, p_result)
  returning imported_at into at;
  return at;
end
$$;
revoke all on function avatar_chat.finish_import(text, text, jsonb) from public, anon, authenticated;

create or replace function avatar_chat.messages_assign_seq() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  me uuid := auth.uid();
begin
  update public.conversations c
     set last_seq = c.last_seq + 1, updated_at = now()
   where c.id = new.conversation_id
     and (me is null or (c.user_id = me and new.user_id = me))
  returning c.last_seq into new.seq;
  if new.seq is null and me is null then
    raise foreign_key_violation using
      message = 'conversation does not exist', constraint = 'messages_conversation_id_fkey';
  end if;
  -- An import (avatar_chat.begin_import; no API role can mark a transaction so) keeps the
  -- archive's times.
  if current_setting('avatar_chat.importing', true) is distinct from 'on' or new.created_at is null then
    new.created_at := now();
    new.updated_at := now();
  end if;
  return new;
end
$$;

create or replace function avatar_chat.conversations_stamp() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  -- An import (avatar_chat.begin_import) sets the archive's last activity itself.
  if current_setting('avatar_chat.importing', true) is distinct from 'on' then
    new.updated_at := now();
  end if;
  new.created_at := old.created_at;
  return new;
end
$$;

create or replace function avatar_chat.messages_enforce_limits() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  lim avatar_chat.limits;
  pl record;
  counted boolean;
  per_minute integer;
  max_streams integer;
  sent integer;
  window_start timestamptz := date_trunc('minute', now());
  streaming integer;
  local_now timestamp;
  c avatar_chat.usage_counters;
  quota text;
  allowed bigint;
  used bigint;
  resets timestamptz;
begin
  -- An imported message (avatar_chat.begin_import) is no model call.
  if new.seq is null or current_setting('avatar_chat.importing', true) = 'on' then
    return new;
  end if;
  counted := new.role = 'user'
             or (new.role = 'assistant' and new.status = 'streaming'
                 and new.reply_to is distinct from nullif(current_setting('avatar_chat.counted_send', true), '')::uuid);
  if not counted and not (new.role = 'assistant' and new.status = 'streaming') then
    return new;
  end if;
  select * into lim from avatar_chat.limits where id;
  select * into pl from avatar_chat.plan_of(new.user_id, (select auth.jwt()) -> 'app_metadata' ->> 'plan');
  per_minute := coalesce((pl.plan).sends_per_minute, lim.sends_per_minute, 0);
  max_streams := coalesce((pl.plan).max_concurrent_streams, lim.max_concurrent_streams, 0);
  if counted then
    if new.role = 'user' then
      perform set_config('avatar_chat.counted_send', new.id::text, true);
    end if;
    if per_minute > 0 then
      insert into avatar_chat.send_counters as sc (user_id, window_start, sends)
      values (new.user_id, window_start, 1)
      on conflict (user_id) do update
        set sends = case when sc.window_start = excluded.window_start then sc.sends + 1 else 1 end,
            window_start = excluded.window_start
      returning sc.sends into sent;
      if sent > per_minute then
        raise exception 'Too many messages this minute; retry later.'
          using errcode = 'AC429', hint = 'rate_limited',
                detail = json_build_object(
                  'retry_after',
                  greatest(1, ceil(extract(epoch from (window_start + interval '1 minute' - now()))))::integer
                )::text;
      end if;
    end if;
    local_now := now() at time zone pl.time_zone;
    insert into avatar_chat.usage_counters as u (user_id, time_zone, day, day_messages, month, month_messages)
    values (new.user_id, pl.time_zone, local_now::date, 1, date_trunc('month', local_now)::date, 1)
    on conflict (user_id) do update
      set time_zone = excluded.time_zone,
          day_messages = case when u.day = excluded.day then u.day_messages + 1 else 1 end,
          day_tokens = case when u.day = excluded.day then u.day_tokens else 0 end,
          day = excluded.day,
          month_messages = case when u.month = excluded.month then u.month_messages + 1 else 1 end,
          month_tokens = case when u.month = excluded.month then u.month_tokens else 0 end,
          month = excluded.month
    returning u.* into c;
    if c.day_messages > (pl.plan).messages_per_day then
      quota := 'messages_per_day'; allowed := (pl.plan).messages_per_day; used := c.day_messages - 1;
    elsif c.day_tokens >= (pl.plan).tokens_per_day then
      quota := 'tokens_per_day'; allowed := (pl.plan).tokens_per_day; used := c.day_tokens;
    elsif c.month_tokens >= (pl.plan).tokens_per_month then
      quota := 'tokens_per_month'; allowed := (pl.plan).tokens_per_month; used := c.month_tokens;
    end if;
    if quota is not null then
      resets := case when quota = 'tokens_per_month'
                     then (c.month + interval '1 month')::timestamp at time zone pl.time_zone
                     else (c.day + 1)::timestamp at time zone pl.time_zone end;
      raise exception '%', case quota when 'messages_per_day' then 'You have used this plan''s messages for today.'
                                      when 'tokens_per_day' then 'You have used this plan''s tokens for today.'
                                      else 'You have used this plan''s tokens for this month.' end
        using errcode = 'AC429', hint = 'quota_exceeded',
              detail = json_build_object(
                'retry_after', greatest(1, ceil(extract(epoch from (resets - now()))))::bigint,
                'plan', (pl.plan).name, 'limit', quota, 'allowed', allowed, 'used', used,
                'resets_at', resets
              )::text;
    end if;
  end if;
  if new.role = 'assistant' and new.status = 'streaming' and max_streams > 0 then
    select count(*) into streaming from public.messages m
     where m.user_id = new.user_id and m.status = 'streaming' and m.lease_expires_at > now()
       and (m.worker_id is null
            or exists (select from avatar_chat.workers w where w.id = m.worker_id and w.expires_at > now()));
    if streaming >= max_streams then
      raise exception 'Too many replies are being generated at once; retry when one finishes.'
        using errcode = 'AC429', hint = 'too_many_streams', detail = '{"retry_after": 2}';
    end if;
  end if;
  return new;
end
$$;

