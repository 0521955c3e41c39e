-- Declarative schema: the live definition of the abuse limits (tables, the enforcing
-- trigger on public.messages, configure_limits).
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration
-- (`supabase db diff -f <name>` drafts one; comments, column grants and publication
-- membership it does not see, so write those by hand). tests/core/test_schema_files.py
-- fails while the two disagree.
--
-- Enforced in Postgres so they hold across every worker and machine, and for every
-- writer (this API and the Data API alike): sends per user per minute, and replies being
-- generated at once per user; and image uploads per user per minute, counted before the
-- API decodes an image (count_image_upload). The API writes its configured values into
-- avatar_chat.limits at start-up; 0 (or no row) disables a limit.

create table avatar_chat.limits (
  id boolean not null default true,
  sends_per_minute integer not null default 0,
  max_concurrent_streams integer not null default 0,
  image_uploads_per_minute integer not null default 0,
  updated_at timestamptz not null default now(),
  default_plan text,
  constraint limits_pkey primary key (id),
  constraint limits_single_row check (id),
  constraint limits_nonnegative check (sends_per_minute >= 0 and max_concurrent_streams >= 0),
  constraint limits_image_uploads_nonnegative check (image_uploads_per_minute >= 0),
  constraint limits_default_plan_fkey foreign key (default_plan) references public.plans (name) on update cascade
);
comment on table avatar_chat.limits is 'Abuse limits (one row), written by the API from its settings at start-up.';
comment on column avatar_chat.limits.default_plan is
  'The plan of users who have none (USAGE_DEFAULT_PLAN); a plan in use as the default cannot be deleted.';
create index limits_default_plan_idx on avatar_chat.limits (default_plan);

create table avatar_chat.send_counters (
  user_id uuid not null,
  window_start timestamptz not null,
  sends integer not null,
  constraint send_counters_pkey primary key (user_id),
  constraint send_counters_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table avatar_chat.send_counters is 'Per-user send count in the current one-minute window.';

revoke all on avatar_chat.limits, avatar_chat.send_counters from public, anon, authenticated;

-- Raises AC429 with the reason as HINT (rate_limited, too_many_streams, quota_exceeded)
-- and the seconds to wait as DETAIL {"retry_after": n} (quota_exceeded adds the plan, the
-- limit, what it allows, what was used and when it resets). A refused send rolls back with
-- its statement, so it neither counts nor leaves a row behind. A row that
-- messages_assign_seq left unnumbered is about to be refused by RLS: nothing is counted or
-- locked for it, least of all for the user its user_id names.
--
-- Every model call a user asks for counts once, against sends_per_minute and the plan's
-- messages_per_day: a user message (its reply, inserted in the same transaction, is not
-- counted again: the message's id is remembered in the transaction-local setting
-- avatar_chat.counted_send), a streaming reply to a message sent before (regenerate,
-- edit: begin_regenerate), and a reply taken up again as a new attempt (a retry with the
-- same Idempotency-Key after it failed, was stopped or its worker died:
-- messages_enforce_limits_on_retry). A replay of a complete reply, or joining one still
-- being generated, writes no row and counts nothing; nor does an import (its messages are
-- no model calls).
--
-- The limits are the user's plan's (avatar_chat.plan_of, read in the request, never cached
-- across transactions: a plan edited in the dashboard holds from the next call on), its
-- null ones the deployment's. begin_turn, which reads the plan anyway, hands it to the rows
-- it writes in the transaction-local setting avatar_chat.turn_plan ({user, token_plan,
-- xact, time_zone, plan}), cleared once they are written; it is used only for a row of
-- that user, under the same token's app_metadata.plan, in the same transaction
-- (pg_current_xact_id). Any other writer (the Data API, begin_regenerate, a setting left
-- for someone else) gets plan_of read here. As avatar_chat.importing, it is trusted: the
-- Data API runs no set_config for its callers. Quotas: the
-- call is refused when the day's calls would pass messages_per_day, or when the day's or
-- the month's tokens (record_usage adds them as replies end) have reached tokens_per_day
-- or tokens_per_month. The user's usage_counters row is locked by the count, so calls
-- from every worker are admitted one after the other. A reply already admitted is never
-- cut: the tokens it spends may take the total a little past the limit.
create function avatar_chat.messages_enforce_limits() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  lim avatar_chat.limits;
  pl record;
  token_plan text;
  turn jsonb;
  user_tz text;
  user_plan public.plans;
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
  -- The plan begin_turn read for this turn (avatar_chat.turn_plan) when it is this user's,
  -- for this token's plan, in this transaction; else (any other writer) read here.
  token_plan := auth.jwt() -> 'app_metadata' ->> 'plan';
  turn := nullif(current_setting('avatar_chat.turn_plan', true), '')::jsonb;
  if turn ->> 'user' = new.user_id::text and turn ->> 'xact' = pg_current_xact_id()::text
     and turn ->> 'token_plan' is not distinct from token_plan then
    user_tz := turn ->> 'time_zone';
    user_plan := jsonb_populate_record(null::public.plans, nullif(turn -> 'plan', 'null'));
  else
    select * into pl from avatar_chat.plan_of(new.user_id, token_plan);
    user_tz := pl.time_zone;
    user_plan := pl.plan;
  end if;
  per_minute := coalesce(user_plan.sends_per_minute, lim.sends_per_minute, 0);
  max_streams := coalesce(user_plan.max_concurrent_streams, lim.max_concurrent_streams, 0);
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
    local_now := now() at time zone user_tz;
    insert into avatar_chat.usage_counters as u (user_id, time_zone, day, day_messages, month, month_messages)
    values (new.user_id, user_tz, local_now::date, 1, date_trunc('month', local_now)::date, 1)
    on conflict (user_id) do update
      set time_zone = excluded.time_zone,
          day_messages = case when u.day = excluded.day then u.day_messages + 1 else 1 end,
          day_tokens = case when u.day = excluded.day then u.day_tokens else 0 end,
          day = excluded.day,
          month_messages = case when u.month = excluded.month then u.month_messages + 1 else 1 end,
          month_tokens = case when u.month = excluded.month then u.month_tokens else 0 end,
          month = excluded.month
    returning u.* into c;
    if c.day_messages > user_plan.messages_per_day then
      quota := 'messages_per_day'; allowed := user_plan.messages_per_day; used := c.day_messages - 1;
    elsif c.day_tokens >= user_plan.tokens_per_day then
      quota := 'tokens_per_day'; allowed := user_plan.tokens_per_day; used := c.day_tokens;
    elsif c.month_tokens >= user_plan.tokens_per_month then
      quota := 'tokens_per_month'; allowed := user_plan.tokens_per_month; used := c.month_tokens;
    end if;
    if quota is not null then
      resets := case when quota = 'tokens_per_month'
                     then (c.month + interval '1 month')::timestamp at time zone user_tz
                     else (c.day + 1)::timestamp at time zone user_tz end;
      raise exception '%', case quota when 'messages_per_day' then 'You have used this plan''s messages for today.'
                                      when 'tokens_per_day' then 'You have used this plan''s tokens for today.'
                                      else 'You have used this plan''s tokens for this month.' end
        using errcode = 'AC429', hint = 'quota_exceeded',
              detail = json_build_object(
                'retry_after', greatest(1, ceil(extract(epoch from (resets - now()))))::bigint,
                'plan', user_plan.name, 'limit', quota, 'allowed', allowed, 'used', used,
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

-- Fires after messages_assign_seq (20_conversations.sql): BEFORE triggers run in name order.
create trigger messages_enforce_limits
before insert on public.messages
for each row execute function avatar_chat.messages_enforce_limits();

-- A reply taken up again (begin_turn's and begin_regenerate's retry: a new attempt) is a
-- model call too. Only an update that sets attempt is considered, so settling or saving a
-- reply never fires it.
create trigger messages_enforce_limits_on_retry
before update of attempt on public.messages
for each row when (new.attempt > old.attempt)
execute function avatar_chat.messages_enforce_limits();

-- Writes the limits only when they differ, so N workers starting do not churn the row.
create function avatar_chat.configure_limits(p_sends_per_minute integer, p_max_concurrent_streams integer)
returns void
language sql
set search_path = ''
as $$
  insert into avatar_chat.limits as l (id, sends_per_minute, max_concurrent_streams)
  values (true, p_sends_per_minute, p_max_concurrent_streams)
  on conflict (id) do update
    set sends_per_minute = excluded.sends_per_minute,
        max_concurrent_streams = excluded.max_concurrent_streams,
        updated_at = now()
    where (l.sends_per_minute, l.max_concurrent_streams)
          is distinct from (excluded.sends_per_minute, excluded.max_concurrent_streams);
$$;

revoke all on function avatar_chat.configure_limits(integer, integer) from public, anon, authenticated;

-- The plan of users who have none (USAGE_DEFAULT_PLAN): created without limits if it is
-- missing (the operator sets them in the dashboard), and named in avatar_chat.limits.
-- Writes only what changes, so N workers starting do not churn the rows.
create function avatar_chat.configure_default_plan(p_name text)
returns void
language sql
set search_path = ''
as $$
  insert into public.plans (name) values (p_name) on conflict (name) do nothing;
  insert into avatar_chat.limits as l (id, default_plan)
  values (true, p_name)
  on conflict (id) do update
    set default_plan = excluded.default_plan, updated_at = now()
    where l.default_plan is distinct from excluded.default_plan;
$$;

revoke all on function avatar_chat.configure_default_plan(text) from public, anon, authenticated;

-- Image uploads: the API counts one, as the user, before it decodes the image (PUT
-- /avatars/me/image, through begin_my_image_upload in 10_avatars.sql), so a refused
-- upload costs no decode. Every upload counted is one the API went on to decode (or found
-- busy); a refused one rolls back with its statement and counts nothing.
create table avatar_chat.image_upload_counters (
  user_id uuid not null,
  window_start timestamptz not null,
  uploads integer not null,
  constraint image_upload_counters_pkey primary key (user_id),
  constraint image_upload_counters_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table avatar_chat.image_upload_counters is 'Per-user image upload count in the current one-minute window.';

revoke all on avatar_chat.image_upload_counters from public, anon, authenticated;

-- Counts one image upload of this user in the current minute; raises AC429
-- image_rate_limited with DETAIL {"retry_after": n} beyond limits.image_uploads_per_minute.
-- Called by begin_my_image_upload and begin_my_card_image only (their owner's privileges, for
-- the user they checked).
create function avatar_chat.count_image_upload(p_user_id uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  per_minute integer;
  uploads integer;
  window_start timestamptz := date_trunc('minute', now());
begin
  select l.image_uploads_per_minute into per_minute from avatar_chat.limits l where l.id;
  if coalesce(per_minute, 0) = 0 then
    return;
  end if;
  insert into avatar_chat.image_upload_counters as c (user_id, window_start, uploads)
  values (p_user_id, window_start, 1)
  on conflict (user_id) do update
    set uploads = case when c.window_start = excluded.window_start then c.uploads + 1 else 1 end,
        window_start = excluded.window_start
  returning c.uploads into uploads;
  if uploads > per_minute then
    raise exception 'Too many image uploads this minute; retry later.'
      using errcode = 'AC429', hint = 'image_rate_limited',
            detail = json_build_object(
              'retry_after',
              greatest(1, ceil(extract(epoch from (window_start + interval '1 minute' - now()))))::integer
            )::text;
  end if;
end
$$;

comment on function avatar_chat.count_image_upload(uuid) is
  'Count one image upload of a user in this minute; AC429 image_rate_limited beyond the limit.';
revoke all on function avatar_chat.count_image_upload(uuid) from public, anon, authenticated;

-- As configure_limits, for the image upload rate (0 disables it).
create function avatar_chat.configure_image_upload_rate(p_per_minute integer)
returns void
language sql
set search_path = ''
as $$
  insert into avatar_chat.limits as l (id, image_uploads_per_minute)
  values (true, p_per_minute)
  on conflict (id) do update
    set image_uploads_per_minute = excluded.image_uploads_per_minute,
        updated_at = now()
    where l.image_uploads_per_minute is distinct from excluded.image_uploads_per_minute;
$$;

revoke all on function avatar_chat.configure_image_upload_rate(integer) from public, anon, authenticated;
