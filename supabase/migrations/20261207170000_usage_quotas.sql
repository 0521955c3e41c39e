-- Usage and quotas (docs/usage.md): plans the operator edits, each user's plan and time
-- zone, what every model call cost, each user's quota windows; the quotas enforced by the
-- messages_enforce_limits trigger in the round trip a turn already makes; begin_turn and
-- begin_regenerate answer the plan; finish_turn, begin_turn, begin_regenerate and
-- end_summary record usage. Declarative definitions: supabase/schemas/27_usage.sql,
-- 30_chat_turns.sql, 40_limits.sql.

-- A plan: what its users may spend. A null limit is no limit. Edited in the dashboard;
-- the plan named by USAGE_DEFAULT_PLAN is created (without limits) if it is missing.
create table public.plans (
  name text not null,
  messages_per_day integer,
  tokens_per_day bigint,
  tokens_per_month bigint,
  max_reply_tokens integer,
  models text[],
  max_concurrent_streams integer,
  sends_per_minute integer,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint plans_pkey primary key (name),
  constraint plans_name_format check (name ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
  constraint plans_messages_per_day_nonnegative check (messages_per_day >= 0),
  constraint plans_tokens_per_day_nonnegative check (tokens_per_day >= 0),
  constraint plans_tokens_per_month_nonnegative check (tokens_per_month >= 0),
  constraint plans_max_reply_tokens_range check (max_reply_tokens between 1 and 1000000),
  constraint plans_models_listed check (
    cardinality(models) between 1 and 50 and array_position(models, null) is null and '' <> all (models)
  ),
  constraint plans_max_concurrent_streams_nonnegative check (max_concurrent_streams >= 0),
  constraint plans_sends_per_minute_nonnegative check (sends_per_minute >= 0)
);
comment on table public.plans is
  'Plans and their limits (null: no limit), edited by the operator; a change holds from the next request on.';
comment on column public.plans.messages_per_day is
  'Model calls a user may ask for per day (a send, a regenerate, an edit, a retry count one each); 0 allows none.';
comment on column public.plans.tokens_per_day is
  'Prompt plus completion tokens of replies and summaries per day; a turn is refused once they are spent.';
comment on column public.plans.tokens_per_month is
  'Prompt plus completion tokens of replies and summaries per calendar month.';
comment on column public.plans.max_reply_tokens is 'The most tokens one reply may have (with LLM_MAX_TOKENS, the lower holds).';
comment on column public.plans.models is
  'The models its replies may use; LLM_MODEL when listed (or when null), else the first listed.';
comment on column public.plans.max_concurrent_streams is 'Replies generating at once per user (null: MAX_CONCURRENT_STREAMS).';
comment on column public.plans.sends_per_minute is 'Model calls per user per minute (null: RATE_LIMIT_SENDS_PER_MINUTE).';

alter table public.plans enable row level security;
create policy plans_select_all on public.plans for select to authenticated using (true);
revoke all on public.plans from public, anon, authenticated;
grant select on public.plans to authenticated;
grant all on public.plans to service_role;

-- Each user's plan and time zone, set by the operator (dashboard, service role), never by
-- the user. No row, or a null plan: the JWT's app_metadata.plan when it names a plan, else
-- the default plan. A null time zone: UTC.
create table public.user_plans (
  user_id uuid not null,
  plan text,
  time_zone text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_plans_pkey primary key (user_id),
  constraint user_plans_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint user_plans_plan_fkey foreign key (plan) references public.plans (name) on update cascade
);
comment on table public.user_plans is
  'The plan and time zone of a user, set by the operator; read at every turn, so a change holds at once.';
comment on column public.user_plans.time_zone is
  'An IANA time zone (Europe/Paris): the user''s days and months start at its midnight. Null: UTC.';
create index user_plans_plan_idx on public.user_plans (plan);

alter table public.user_plans enable row level security;
create policy user_plans_select_own on public.user_plans
  for select to authenticated using ((select auth.uid()) = user_id);
revoke all on public.user_plans from public, anon, authenticated;
grant select on public.user_plans to authenticated;
grant all on public.user_plans to service_role;

-- A time zone Postgres does not know is refused with the check_violation a constraint
-- would raise (a CHECK cannot try the conversion; this trigger can).
create function avatar_chat.user_plans_check_time_zone() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.time_zone is not null then
    begin
      perform now() at time zone new.time_zone;
    exception when invalid_parameter_value then
      raise exception 'Unknown time zone "%": use an IANA name such as Europe/Paris.', new.time_zone
        using errcode = 'check_violation', constraint = 'user_plans_time_zone_known',
              table = 'user_plans', schema = 'public';
    end;
  end if;
  return new;
end
$$;
revoke all on function avatar_chat.user_plans_check_time_zone() from public, anon, authenticated;

create trigger user_plans_check_time_zone
before insert or update of time_zone on public.user_plans
for each row execute function avatar_chat.user_plans_check_time_zone();

-- What one model call (or, for moderation, the calls checking one message or reply) cost:
-- its tokens, the model, and whether the provider reported them (provider) or they were
-- estimated from the text (estimate: four characters a token). Users read their own
-- (RLS); only the API writes them (record_usage). Deleted with the account.
create table public.usage_records (
  id bigint generated always as identity,
  user_id uuid not null,
  conversation_id uuid,
  message_id uuid,
  kind text not null,
  model text not null,
  plan text,
  calls integer not null default 1,
  prompt_tokens integer not null,
  completion_tokens integer not null,
  source text not null,
  status text,
  created_at timestamptz not null default now(),
  constraint usage_records_pkey primary key (id),
  constraint usage_records_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint usage_records_kind check (kind in ('reply', 'summary', 'moderation')),
  constraint usage_records_source check (source in ('provider', 'estimate')),
  constraint usage_records_tokens_nonnegative check (prompt_tokens >= 0 and completion_tokens >= 0 and calls >= 1),
  constraint usage_records_model_length check (char_length(model) between 1 and 200)
);
comment on table public.usage_records is
  'What each model call cost (tokens, model, reported or estimated); the user''s own are readable. Deleted with the account.';
comment on column public.usage_records.kind is
  'reply: an avatar''s reply (whatever its end: complete, stopped, failed, filtered); summary: conversation memory; moderation: the checks of one message or reply.';
comment on column public.usage_records.source is
  'provider: the figures the provider reported; estimate: counted from the text at four characters a token.';
comment on column public.usage_records.status is 'For a reply: how it ended (complete, stopped, failed, filtered, interrupted).';
comment on column public.usage_records.message_id is 'The reply (or checked message) it was spent on; may name a message deleted since.';
create index usage_records_user_id_created_at_idx on public.usage_records (user_id, created_at);
create index usage_records_created_at_idx on public.usage_records using brin (created_at);
-- A conversation's records by message: what its export reads with each message.
create index usage_records_conversation_id_message_id_idx on public.usage_records (conversation_id, message_id);

alter table public.usage_records enable row level security;
create policy usage_records_select_own on public.usage_records
  for select to authenticated using ((select auth.uid()) = user_id);
revoke all on public.usage_records from public, anon, authenticated;
grant select on public.usage_records to authenticated;
grant all on public.usage_records to service_role;

-- Each user's spending in the current day and month of their time zone: model calls
-- counted by the messages_enforce_limits trigger, tokens of replies and summaries added by
-- record_usage. A new day or month starts its count at zero.
create table avatar_chat.usage_counters (
  user_id uuid not null,
  time_zone text not null default 'UTC',
  day date not null,
  day_messages integer not null default 0,
  day_tokens bigint not null default 0,
  month date not null,
  month_messages integer not null default 0,
  month_tokens bigint not null default 0,
  constraint usage_counters_pkey primary key (user_id),
  constraint usage_counters_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table avatar_chat.usage_counters is
  'Each user''s model calls and tokens in the current day and month (their time zone), for the quotas.';
revoke all on avatar_chat.usage_counters from public, anon, authenticated;

-- The plan a user is on: public.user_plans, else the token's app_metadata.plan when it
-- names a plan, else the default plan (avatar_chat.limits.default_plan); and their time
-- zone. plan_source says which (null with no plan at all: no limit of a plan applies).
create function avatar_chat.plan_of(
  p_user_id uuid,
  p_token_plan text,
  out plan_source text,
  out time_zone text,
  out plan public.plans
)
language plpgsql
stable
set search_path = ''
as $$
declare
  assigned text;
begin
  select u.plan, u.time_zone into assigned, time_zone from public.user_plans u where u.user_id = p_user_id;
  time_zone := coalesce(time_zone, 'UTC');
  if assigned is not null then
    select * into plan from public.plans p where p.name = assigned;
    plan_source := 'user_plans';
  elsif p_token_plan is not null then
    select * into plan from public.plans p where p.name = p_token_plan;
    plan_source := 'token';
  end if;
  if plan.name is null then
    select p.* into plan from avatar_chat.limits l join public.plans p on p.name = l.default_plan where l.id;
    plan_source := case when plan.name is null then null else 'default' end;
  end if;
end
$$;
comment on function avatar_chat.plan_of(uuid, text) is
  'The plan of a user (user_plans, else the token''s app_metadata.plan, else the default) and their time zone.';
revoke all on function avatar_chat.plan_of(uuid, text) from public, anon, authenticated;

-- record_usage: what model calls spent for a user, as the JSON array the API sends
-- ([{kind, model, plan, calls, prompt_tokens, completion_tokens, source, status}]; an
-- entry without a plan gets p_plan): one
-- usage_records row each, and the tokens of replies and summaries added to the user's
-- day and month. Called by finish_turn, begin_turn, begin_regenerate and end_summary, as
-- the connecting role (users cannot write usage).
create function avatar_chat.record_usage(
  p_user_id uuid, p_conversation_id uuid, p_message_id uuid, p_usage jsonb, p_plan text
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
  spent bigint;
begin
  if p_usage is null or jsonb_array_length(p_usage) = 0 then
    return;
  end if;
  with added as (
    insert into public.usage_records (user_id, conversation_id, message_id, kind, model, plan, calls,
                                      prompt_tokens, completion_tokens, source, status)
    select p_user_id, p_conversation_id, p_message_id, u.kind, u.model, coalesce(u.plan, p_plan), coalesce(u.calls, 1),
           u.prompt_tokens, u.completion_tokens, u.source, u.status
      from jsonb_to_recordset(p_usage) as u(kind text, model text, plan text, calls integer,
                                            prompt_tokens integer, completion_tokens integer,
                                            source text, status text)
    returning kind, prompt_tokens, completion_tokens
  )
  select sum(a.prompt_tokens + a.completion_tokens) filter (where a.kind <> 'moderation') into spent from added a;
  if coalesce(spent, 0) > 0 then
    update avatar_chat.usage_counters c
       set day_tokens = case when c.day = (now() at time zone c.time_zone)::date then c.day_tokens + spent else spent end,
           day_messages = case when c.day = (now() at time zone c.time_zone)::date then c.day_messages else 0 end,
           day = (now() at time zone c.time_zone)::date,
           month_tokens = case when c.month = date_trunc('month', now() at time zone c.time_zone)::date
                               then c.month_tokens + spent else spent end,
           month_messages = case when c.month = date_trunc('month', now() at time zone c.time_zone)::date
                                 then c.month_messages else 0 end,
           month = date_trunc('month', now() at time zone c.time_zone)::date
     where c.user_id = p_user_id;
    if not found then
      -- Tokens spent with no model call counted yet (usage written by hand, a Data API
      -- writer): the user's first counters, in UTC until a counted call sets their zone.
      insert into avatar_chat.usage_counters as c (user_id, day, day_tokens, month, month_tokens)
      values (p_user_id, (now() at time zone 'UTC')::date, spent,
              date_trunc('month', now() at time zone 'UTC')::date, spent)
      on conflict (user_id) do update
        set day_tokens = c.day_tokens + excluded.day_tokens, month_tokens = c.month_tokens + excluded.month_tokens;
    end if;
  end if;
end
$$;
comment on function avatar_chat.record_usage(uuid, uuid, uuid, jsonb, text) is
  'Record what model calls spent for a user (usage_records) and add it to their quota windows.';
revoke all on function avatar_chat.record_usage(uuid, uuid, uuid, jsonb, text) from public, anon, authenticated;

-- my_usage: GET /me/usage in one round trip: the user's plan, today's and this month's
-- model calls and tokens against its limits with when each window resets, and per model
-- and kind. Windows are the user's time zone's days and months.
create function avatar_chat.my_usage(claims text)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  me uuid;
  pl record;
  c avatar_chat.usage_counters;
  local_now timestamp;
  day_start date;
  month_start date;
  by_model jsonb;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  perform set_config('role', 'none', true);  -- the counters and the default plan are the API's
  select * into pl from avatar_chat.plan_of(me, claims::jsonb -> 'app_metadata' ->> 'plan');
  local_now := now() at time zone pl.time_zone;
  day_start := local_now::date;
  month_start := date_trunc('month', local_now)::date;
  select * into c from avatar_chat.usage_counters u where u.user_id = me;
  select coalesce(jsonb_agg(jsonb_build_object(
           'model', r.model, 'kind', r.kind,
           'day', jsonb_build_object('calls', r.day_calls, 'prompt_tokens', r.day_prompt,
                                     'completion_tokens', r.day_completion),
           'month', jsonb_build_object('calls', r.month_calls, 'prompt_tokens', r.month_prompt,
                                       'completion_tokens', r.month_completion))
           order by r.model, r.kind), '[]')
    into by_model
    from (select u.model, u.kind,
                 coalesce(sum(u.calls) filter (where u.created_at >= day_start::timestamp at time zone pl.time_zone), 0) as day_calls,
                 coalesce(sum(u.prompt_tokens) filter (where u.created_at >= day_start::timestamp at time zone pl.time_zone), 0) as day_prompt,
                 coalesce(sum(u.completion_tokens) filter (where u.created_at >= day_start::timestamp at time zone pl.time_zone), 0) as day_completion,
                 sum(u.calls) as month_calls, sum(u.prompt_tokens) as month_prompt,
                 sum(u.completion_tokens) as month_completion
            from public.usage_records u
           where u.user_id = me and u.created_at >= month_start::timestamp at time zone pl.time_zone
           group by u.model, u.kind) r;
  return jsonb_build_object(
    'plan', case when (pl.plan).name is null then null else jsonb_build_object(
      'name', (pl.plan).name, 'messages_per_day', (pl.plan).messages_per_day,
      'tokens_per_day', (pl.plan).tokens_per_day, 'tokens_per_month', (pl.plan).tokens_per_month,
      'max_reply_tokens', (pl.plan).max_reply_tokens, 'models', to_jsonb((pl.plan).models),
      'max_concurrent_streams', (pl.plan).max_concurrent_streams,
      'sends_per_minute', (pl.plan).sends_per_minute) end,
    'plan_source', pl.plan_source,
    'time_zone', pl.time_zone,
    'day', jsonb_build_object(
      'start', day_start::timestamp at time zone pl.time_zone,
      'resets_at', (day_start + 1)::timestamp at time zone pl.time_zone,
      'messages', case when c.day = day_start then c.day_messages else 0 end,
      'tokens', case when c.day = day_start then c.day_tokens else 0 end,
      'messages_limit', (pl.plan).messages_per_day,
      'tokens_limit', (pl.plan).tokens_per_day),
    'month', jsonb_build_object(
      'start', month_start::timestamp at time zone pl.time_zone,
      'resets_at', (month_start + interval '1 month')::timestamp at time zone pl.time_zone,
      'messages', case when c.month = month_start then c.month_messages else 0 end,
      'tokens', case when c.month = month_start then c.month_tokens else 0 end,
      'tokens_limit', (pl.plan).tokens_per_month),
    'by_model', by_model);
end
$$;
revoke all on function avatar_chat.my_usage(text) from public, anon, authenticated;

-- The operator's views (dashboard, SQL editor), by UTC day: what was spent, per model and
-- kind, and per plan (the plan in force at each call).
create view avatar_chat.usage_by_day as
select (u.created_at at time zone 'UTC')::date as day, u.kind, sum(u.calls) as calls,
       sum(u.prompt_tokens) as prompt_tokens, sum(u.completion_tokens) as completion_tokens,
       count(distinct u.user_id) as users
  from public.usage_records u
 group by 1, 2;
comment on view avatar_chat.usage_by_day is 'Model calls and tokens per UTC day and kind, with how many users spent them.';

create view avatar_chat.usage_by_model as
select (u.created_at at time zone 'UTC')::date as day, u.model, u.kind, sum(u.calls) as calls,
       sum(u.prompt_tokens) as prompt_tokens, sum(u.completion_tokens) as completion_tokens,
       count(*) filter (where u.source = 'estimate') as estimated_records
  from public.usage_records u
 group by 1, 2, 3;
comment on view avatar_chat.usage_by_model is
  'Model calls and tokens per UTC day, model and kind; estimated_records counts the figures that were estimated.';

create view avatar_chat.usage_by_plan as
select (u.created_at at time zone 'UTC')::date as day, coalesce(u.plan, '(none)') as plan, u.kind,
       sum(u.calls) as calls, sum(u.prompt_tokens) as prompt_tokens,
       sum(u.completion_tokens) as completion_tokens, count(distinct u.user_id) as users
  from public.usage_records u
 group by 1, 2, 3;
comment on view avatar_chat.usage_by_plan is 'Model calls and tokens per UTC day, plan (in force at the call) and kind.';

revoke all on avatar_chat.usage_by_day, avatar_chat.usage_by_model, avatar_chat.usage_by_plan
  from public, anon, authenticated;

alter table avatar_chat.limits add column default_plan text;
alter table avatar_chat.limits add constraint limits_default_plan_fkey
  foreign key (default_plan) references public.plans (name) on update cascade;
comment on column avatar_chat.limits.default_plan is
  'The plan of users who have none (USAGE_DEFAULT_PLAN); a plan in use as the default cannot be deleted.';
create index limits_default_plan_idx on avatar_chat.limits (default_plan);

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
-- being generated, writes no row and counts nothing.
--
-- The limits are the user's plan's (avatar_chat.plan_of, read here: a plan edited in the
-- dashboard holds from the next call on), its null ones the deployment's. Quotas: the
-- call is refused when the day's calls would pass messages_per_day, or when the day's or
-- the month's tokens (record_usage adds them as replies end) have reached tokens_per_day
-- or tokens_per_month. The user's usage_counters row is locked by the count, so calls
-- from every worker are admitted one after the other. A reply already admitted is never
-- cut: the tokens it spends may take the total a little past the limit.
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
  if new.seq is null then
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


drop function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer, bigint, jsonb
);
drop function avatar_chat.finish_turn(
  text, uuid, integer, text, public.message_status, text, bigint, public.personality_type, jsonb
);
drop function avatar_chat.begin_regenerate(
  text, uuid, uuid, text, text, double precision, bigint, uuid, bigint, integer
);
drop function avatar_chat.end_summary(uuid, uuid);

-- begin_turn: lock the conversation (sends to it queue here), then either
--   new         insert the user's message and a streaming placeholder for the reply;
--   replay      the Idempotency-Key was seen and its reply is complete: return both;
--   in_progress the reply for that key is still being generated: its lease runs and
--               either it names no worker or its worker (p_worker_id, recorded on the
--               reply) is alive (its avatar_chat.workers row has not expired);
--   retry       the reply for that key failed, was cut off, or its worker is gone: take
--               it over again.
-- Takes what the worker has cached (the avatar's id and version, the window's last seq and
-- revision) and returns, as plain columns: the avatar's current id and version, the
-- conversation's mode and revision, the seq before this message; the persona and the last
-- p_window_limit messages only where the worker's cache does not match (null where it
-- does); and what the answer needs (the two messages' ids, seqs and times; a replay's text).
-- A conversation without a title is named after its first message here (title_unset
-- says it had none). So a chat turn is this round trip plus finish_turn, also when its
-- cache misses.
--
-- Safety (docs/safety.md), p_safety null turns it off: p_safety.verdict is what moderation
-- said of p_content in the API, before this call (null: nothing flagged): block / crisis
-- for an adult, minor_block / minor_crisis for a minor (public.user_safety.minor, or
-- app_metadata.minor in the claims), its categories and provider, and `unchecked` when the
-- provider failed and the fail mode is open. A new message then gets, in seq order: an AI
-- disclosure notice (p_safety.disclosure) when the conversation has no message yet, when
-- the user's interaction is new (no message for p_safety.gap_s seconds) or its last
-- disclosure is p_safety.every_s old; for a minor, a break reminder (p_safety.break)
-- every every_s of continuing interaction; the user's message (status blocked when
-- blocked); a crisis notice (p_safety.crisis) when crisis; the placeholder reply unless
-- blocked or (crisis and p_safety.crisis_replaces). Outcomes for it: new, blocked (refused;
-- no reply), notice (a crisis notice and no reply). Its notices come back as arrays (a
-- replay gets its crisis notice again). Then, as the connecting role, the interaction is
-- recorded and each safety event (record_safety_event).
-- p_safety.usage is what moderating the message cost (record_usage's JSON), recorded then.
-- The user's plan comes back (its name, the models and reply length it allows); its
-- quotas are enforced by the messages_enforce_limits trigger (40_limits.sql), whose AC429
-- quota_exceeded rolls the whole turn back.
-- Errors: AC404 conversation_not_found (no such conversation, or not yours),
-- AC409 avatar_required, AC422 idempotency_key_reused (same key, different content),
-- AC429 rate_limited, too_many_streams, quota_exceeded.
create function avatar_chat.begin_turn(
  claims text,
  p_conversation_id uuid,
  p_content text,
  p_idempotency_key text,
  p_lease_s double precision,
  p_worker_id bigint,
  p_known_avatar_id uuid,
  p_known_avatar_version bigint,
  p_known_window_seq bigint,
  p_known_window_revision bigint,
  p_window_limit integer,
  p_known_summary_seq bigint,
  p_safety jsonb
)
returns table (
  outcome text,
  mode text,
  revision bigint,
  title_unset boolean,
  prev_seq bigint,
  avatar_id uuid,
  avatar_version bigint,
  persona_name text,
  persona_personality text,
  persona_backstory text,
  window_seqs bigint[],
  window_roles text[],
  window_contents text[],
  window_statuses text[],
  summary_seq bigint,
  summary_content text,
  user_message_id uuid,
  user_seq bigint,
  user_created_at timestamptz,
  reply_id uuid,
  reply_seq bigint,
  reply_attempt integer,
  reply_created_at timestamptz,
  reply_variant integer,
  reply_content text,
  reply_persona_version bigint,
  reply_personality text,
  minor boolean,
  notice_ids uuid[],
  notice_seqs bigint[],
  notice_kinds text[],
  notice_contents text[],
  notice_created_ats timestamptz[],
  plan_name text,
  plan_models text[],
  plan_max_reply_tokens integer
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  conv public.conversations;
  um public.messages;
  rp public.messages;
  av public.avatars;
  nt public.messages;
  ia avatar_chat.interactions;
  live_workers bigint[];
  upto bigint;
  w_seqs bigint[];
  w_roles text[];
  w_contents text[];
  w_statuses text[];
  is_new boolean;
  s_seq bigint;
  s_content text;
  me uuid;
  verdict jsonb := p_safety -> 'verdict';
  is_minor boolean := false;
  blocked boolean := false;
  crisis boolean := false;
  fresh boolean;
  ia_changed boolean := false;
  n_ids uuid[] := '{}';
  n_seqs bigint[] := '{}';
  n_kinds text[] := '{}';
  n_contents text[] := '{}';
  n_ats timestamptz[] := '{}';
  crisis_id uuid;
  pl record;
begin
  -- The user's plan, read here at every turn (a dashboard edit holds at once): the models
  -- and the reply length it allows. Read before acting as the user (the default plan is
  -- the API's); the messages_enforce_limits trigger holds the turn to its quotas.
  me := (claims::jsonb ->> 'sub')::uuid;
  select * into pl from avatar_chat.plan_of(me, claims::jsonb -> 'app_metadata' ->> 'plan');
  if p_idempotency_key is not null then
    -- Read before acting as the user: the API roles cannot see avatar_chat.workers.
    live_workers := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  end if;
  if p_safety is not null then
    -- The user's interaction, before anything else is locked: their turns on every worker
    -- decide the cadences one after the other (a transaction-scoped advisory lock: held
    -- in memory, nothing written to take it), holding no other lock while they wait here.
    -- act_as checks the claims next, and an error rolls all of it back.
    perform pg_advisory_xact_lock(hashtextextended('avatar_chat.interactions:' || me::text, 0));
    select * into ia from avatar_chat.interactions i where i.user_id = me;
  end if;
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());

  select * into conv from public.conversations c where c.id = p_conversation_id for update;
  if not found then
    raise exception 'No such conversation.' using errcode = 'AC404', hint = 'conversation_not_found';
  end if;

  if p_idempotency_key is not null then
    select * into um from public.messages m
     where m.conversation_id = conv.id and m.idempotency_key = p_idempotency_key;
    if found then
      if um.content is distinct from p_content then
        raise exception 'This Idempotency-Key was already used for a different message.'
          using errcode = 'AC422', hint = 'idempotency_key_reused';
      end if;
      -- The reply a retry is about: the current one (a regenerated send has several).
      select * into rp from public.messages m where m.reply_to = um.id and m.is_current;
      -- Its crisis notice, if it got one: right after it.
      select * into nt from public.messages m
       where m.conversation_id = conv.id and m.seq = um.seq + 1 and m.notice_kind = 'crisis';
      if nt.id is not null then
        n_ids := array[nt.id]; n_seqs := array[nt.seq]; n_kinds := array['crisis'];
        n_contents := array[nt.content]; n_ats := array[nt.created_at];
      end if;
      if um.status = 'blocked' or (rp.id is null and nt.id is not null) then
        return query select case when um.status = 'blocked' and nt.id is null then 'blocked' else 'notice' end,
                            conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, null::uuid, null::bigint, null::integer,
                            null::timestamptz, null::integer, null::text, null::bigint, null::text,
                            false, n_ids, n_seqs, n_kinds, n_contents, n_ats,
                            (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
        return;
      end if;
      if rp.status = 'complete' then
        return query select 'replay', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            rp.content, rp.persona_version, rp.personality::text,
                            false, n_ids, n_seqs, n_kinds, n_contents, n_ats,
                            (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
        return;
      end if;
      -- Still being generated: the lease runs and its worker is alive.
      if rp.status = 'streaming' and rp.lease_expires_at > now()
         and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
        return query select 'in_progress', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            null::text, null::bigint, null::text,
                            false, n_ids, n_seqs, n_kinds, n_contents, n_ats,
                            (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
        return;
      end if;
    end if;
  end if;

  select * into av from public.avatars a where a.user_id = (select auth.uid());
  if not found then
    raise exception 'Create your avatar first (POST /avatars/me).'
      using errcode = 'AC409', hint = 'avatar_required';
  end if;

  is_new := um.id is null;
  if p_safety is not null then
    is_minor := coalesce((auth.jwt() -> 'app_metadata' -> 'minor') = 'true'::jsonb, false)
                or exists (select from public.user_safety s where s.user_id = me and s.minor);
  end if;
  if not is_new then
    -- The reply failed or its worker is gone: same user message, same seq, new attempt.
    if rp.id is null then
      insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at, worker_id)
      values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s), p_worker_id)
      returning * into rp;
    else
      update public.messages m
         set status = 'streaming', content = '', error_code = null, attempt = m.attempt + 1,
             lease_expires_at = now() + make_interval(secs => p_lease_s), worker_id = p_worker_id
       where m.id = rp.id
      returning * into rp;
    end if;
    -- Reviving a failed reply bumped the revision (cached windows must not miss it).
    select c.revision into conv.revision from public.conversations c where c.id = conv.id;
    upto := um.seq - 1;
  else
    if p_safety is not null then
      if verdict is not null then
        blocked := coalesce((verdict ->> case when is_minor then 'minor_block' else 'block' end)::boolean, false);
        crisis := coalesce((verdict ->> case when is_minor then 'minor_crisis' else 'crisis' end)::boolean, false);
      end if;
      fresh := ia.user_id is null or ia.last_at <= now() - make_interval(secs => (p_safety ->> 'gap_s')::float8);
      if fresh then
        ia := row(me, now(), now(), null, null);
        ia_changed := true;
      end if;
      if p_safety ->> 'disclosure' is not null and (
        conv.last_seq = 0 or ia.disclosed_at is null
        or ia.disclosed_at <= now() - make_interval(secs => (p_safety ->> 'every_s')::float8)
      ) then
        insert into public.messages (conversation_id, role, content, status, notice_kind)
        values (conv.id, 'notice', p_safety ->> 'disclosure', 'complete', 'disclosure')
        returning * into nt;
        ia.disclosed_at := now();
        ia_changed := true;
        n_ids := n_ids || nt.id; n_seqs := n_seqs || nt.seq; n_kinds := n_kinds || 'disclosure'::text;
        n_contents := n_contents || nt.content; n_ats := n_ats || nt.created_at;
      end if;
      if is_minor and p_safety ->> 'break' is not null
         and greatest(ia.started_at, ia.reminded_at) <= now() - make_interval(secs => (p_safety ->> 'every_s')::float8) then
        insert into public.messages (conversation_id, role, content, status, notice_kind)
        values (conv.id, 'notice', p_safety ->> 'break', 'complete', 'break')
        returning * into nt;
        ia.reminded_at := now();
        ia_changed := true;
        n_ids := n_ids || nt.id; n_seqs := n_seqs || nt.seq; n_kinds := n_kinds || 'break'::text;
        n_contents := n_contents || nt.content; n_ats := n_ats || nt.created_at;
      end if;
      -- The interaction's latest message, kept to the minute: a user's every turn need not
      -- write it (the gap that ends an interaction is counted in tens of minutes).
      if ia_changed or ia.last_at < now() - interval '1 minute' then
        ia.last_at := now();
        ia_changed := true;
      end if;
    end if;
    insert into public.messages (conversation_id, role, content, status, idempotency_key)
    values (conv.id, 'user', p_content, case when blocked then 'blocked' else 'complete' end::public.message_status,
            p_idempotency_key)
    returning * into um;
    if crisis then
      insert into public.messages (conversation_id, role, content, status, notice_kind)
      values (conv.id, 'notice', p_safety ->> 'crisis', 'complete', 'crisis')
      returning * into nt;
      crisis_id := nt.id;
      n_ids := n_ids || nt.id; n_seqs := n_seqs || nt.seq; n_kinds := n_kinds || 'crisis'::text;
      n_contents := n_contents || nt.content; n_ats := n_ats || nt.created_at;
    end if;
    if not blocked and not (crisis and coalesce((p_safety ->> 'crisis_replaces')::boolean, false)) then
      insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at, worker_id)
      values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s), p_worker_id)
      returning * into rp;
    end if;
    upto := conv.last_seq;
    if conv.title is null and not blocked and not crisis then
      -- The first message names the conversation (its first six words, at most 60
      -- characters), in the transaction that saves it: no round trip after the reply.
      update public.conversations c
         set title = case when w.words = '' then 'New conversation'
                          when char_length(w.words) <= 60 then w.words
                          else left(w.words, 59) || '…' end
        from (select array_to_string(array(
                select x.w from regexp_split_to_table(left(p_content, 1000), '\s+') with ordinality as x(w, n)
                 where x.w <> '' order by x.n limit 6), ' ') as words) w
       where c.id = conv.id;
    end if;
  end if;

  -- The window, unless the worker's cached one ends exactly here (a retry never uses one).
  if rp.id is not null and p_window_limit > 0 and (
    not is_new or (p_known_window_seq, p_known_window_revision) is distinct from (upto, conv.revision)
  ) then
    select coalesce(array_agg(w.seq order by w.seq), '{}'), coalesce(array_agg(w.role::text order by w.seq), '{}'),
           coalesce(array_agg(w.content order by w.seq), '{}'), coalesce(array_agg(w.status::text order by w.seq), '{}')
      into w_seqs, w_roles, w_contents, w_statuses
      from (select m.seq, m.role, m.content, m.status from public.messages m
             where m.conversation_id = conv.id and m.seq <= upto and m.is_current
             order by m.seq desc limit p_window_limit) w;
  end if;

  -- The conversation's summary, if it was made at this very revision (no message edited,
  -- deleted or regenerated since): sent unless the worker has it with its window.
  if rp.id is not null then
    select s.covers_upto_seq, s.content into s_seq, s_content
      from public.conversation_summaries s
     where s.conversation_id = conv.id and s.revision = conv.revision and s.covers_upto_seq <= upto;
    if (s_seq, conv.revision) is not distinct from (p_known_summary_seq, p_known_window_revision) then
      s_content := null;
    end if;
  end if;

  if p_safety is not null and is_new then
    -- The user's work is done: the interaction and the events are written as the
    -- connecting role (users can neither read nor write them).
    perform set_config('role', 'none', true);
    if ia_changed then
      insert into avatar_chat.interactions as i (user_id, started_at, last_at, disclosed_at, reminded_at)
      values (me, ia.started_at, ia.last_at, ia.disclosed_at, ia.reminded_at)
      on conflict (user_id) do update
        set started_at = excluded.started_at, last_at = excluded.last_at,
            disclosed_at = excluded.disclosed_at, reminded_at = excluded.reminded_at;
    end if;
    if blocked then
      perform avatar_chat.record_safety_event(me, conv.id, um.id, 'in', 'block',
        array(select jsonb_array_elements_text(verdict -> 'categories')), verdict ->> 'provider');
    end if;
    if crisis then
      perform avatar_chat.record_safety_event(me, conv.id, crisis_id, 'in', 'crisis',
        array(select jsonb_array_elements_text(verdict -> 'categories')), verdict ->> 'provider');
    end if;
    if coalesce((verdict ->> 'unchecked')::boolean, false) then
      perform avatar_chat.record_safety_event(me, conv.id, um.id, 'in', 'unchecked', '{}', verdict ->> 'provider');
    end if;
    -- What moderating the message cost (remote providers), recorded as the user's.
    perform avatar_chat.record_usage(me, conv.id, um.id, p_safety -> 'usage', (pl.plan).name);
    if rp.id is null then
      return query select case when crisis then 'notice' else 'blocked' end,
                          conv.mode::text, conv.revision, conv.title is null, upto,
                          null::uuid, null::bigint, null::text, null::text, null::text,
                          null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                          um.id, um.seq, um.created_at, null::uuid, null::bigint, null::integer,
                          null::timestamptz, null::integer, null::text, null::bigint, null::text,
                          is_minor, n_ids, n_seqs, n_kinds, n_contents, n_ats,
                            (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
      return;
    end if;
  end if;


  return query select case when is_new then 'new' else 'retry' end,
                      conv.mode::text, conv.revision, conv.title is null, upto,
                      av.id, av.version,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.name end,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.personality::text end,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.backstory end,
                      w_seqs, w_roles, w_contents, w_statuses, s_seq, s_content,
                      um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                      null::text, null::bigint, null::text,
                      is_minor, n_ids, n_seqs, n_kinds, n_contents, n_ats,
                            (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
end
$$;

revoke all on function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer, bigint, jsonb
) from public, anon, authenticated;

-- finish_turn: settle the reply with what was generated and the persona used. Only the
-- attempt that still owns the reply may settle it; a superseded one gets no row back.
-- p_moderation (null: nothing to record) is what moderation of the reply did, recorded as
-- a safety event once the reply is settled: {"action": "filter" (status filtered, its
-- content the operator's replacement) or "unchecked" (the provider failed, fail mode
-- open), "categories": [...], "provider": ...}. p_usage (record_usage's JSON) is what the
-- attempt spent, the model call and its moderation: recorded whether or not it still owned
-- the reply (a superseded attempt spent it too).
create function avatar_chat.finish_turn(
  claims text,
  p_reply_id uuid,
  p_attempt integer,
  p_content text,
  p_status public.message_status,
  p_error_code text,
  p_persona_version bigint,
  p_personality public.personality_type,
  p_moderation jsonb,
  p_usage jsonb
)
returns setof public.messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  rp public.messages;
  settled boolean;
begin
  perform avatar_chat.act_as(claims);
  update public.messages m
     set content = p_content, status = p_status, error_code = p_error_code,
         persona_version = p_persona_version, personality = p_personality, lease_expires_at = null
   where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming'
  returning m.* into rp;
  settled := found;
  if not settled and p_usage is not null then
    select * into rp from public.messages m where m.id = p_reply_id;
  end if;
  if (settled and p_moderation is not null) or p_usage is not null then
    -- As the connecting role: users can write neither events nor usage.
    perform set_config('role', 'none', true);
    if settled and p_moderation is not null then
      perform avatar_chat.record_safety_event(rp.user_id, rp.conversation_id, rp.id, 'out', p_moderation ->> 'action',
        array(select jsonb_array_elements_text(p_moderation -> 'categories')), p_moderation ->> 'provider');
    end if;
    perform avatar_chat.record_usage((claims::jsonb ->> 'sub')::uuid, rp.conversation_id, p_reply_id, p_usage, null);
  end if;
  if settled then
    return next rp;
  end if;
end
$$;

revoke all on function avatar_chat.finish_turn(
  text, uuid, integer, text, public.message_status, text, bigint, public.personality_type, jsonb, jsonb
) from public, anon, authenticated;

-- begin_regenerate: the first round trip of a regeneration (p_new_content null: a new
-- alternative to the latest reply p_message_id) or of an edit (p_new_content: the latest
-- user message p_message_id gets this text and a new reply). Under the conversation's row
-- lock: the current alternative stops being current, a new streaming one is inserted
-- (a new seq, the next variant), and the same answer as begin_turn comes back, plus the
-- user message's text; the window is always sent (messages before the user message).
-- With an Idempotency-Key: replay, in_progress or retry as begin_turn does.
-- Errors: AC404 conversation_not_found, message_not_found; AC409 not_latest (only the
-- latest exchange can be regenerated or edited), reply_in_progress, avatar_required;
-- AC422 not_editable (only a user message can be edited, only a reply regenerated),
-- idempotency_key_reused; AC429 rate_limited, too_many_streams, quota_exceeded. p_usage
-- (record_usage's JSON) is what moderating the edit cost. The plan comes back as from
-- begin_turn.
create function avatar_chat.begin_regenerate(
  claims text,
  p_conversation_id uuid,
  p_message_id uuid,
  p_new_content text,
  p_idempotency_key text,
  p_lease_s double precision,
  p_worker_id bigint,
  p_known_avatar_id uuid,
  p_known_avatar_version bigint,
  p_window_limit integer,
  p_usage jsonb
)
returns table (
  outcome text,
  mode text,
  revision bigint,
  title_unset boolean,
  prev_seq bigint,
  avatar_id uuid,
  avatar_version bigint,
  persona_name text,
  persona_personality text,
  persona_backstory text,
  window_seqs bigint[],
  window_roles text[],
  window_contents text[],
  window_statuses text[],
  user_message_id uuid,
  user_seq bigint,
  user_created_at timestamptz,
  user_content text,
  reply_id uuid,
  reply_seq bigint,
  reply_attempt integer,
  reply_created_at timestamptz,
  reply_variant integer,
  reply_content text,
  reply_persona_version bigint,
  reply_personality text,
  minor boolean,
  plan_name text,
  plan_models text[],
  plan_max_reply_tokens integer
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  is_minor boolean;
  conv public.conversations;
  target public.messages;
  um public.messages;
  rp public.messages;
  av public.avatars;
  live_workers bigint[] := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  next_variant integer;
  w_seqs bigint[];
  w_roles text[];
  w_contents text[];
  w_statuses text[];
  kind text := case when p_new_content is null then 'regenerate' else 'edit' end;
  pl record;
begin
  -- The user's plan, as begin_turn reads it; what moderating an edit cost is recorded.
  select * into pl from avatar_chat.plan_of((claims::jsonb ->> 'sub')::uuid, claims::jsonb -> 'app_metadata' ->> 'plan');
  perform avatar_chat.record_usage((claims::jsonb ->> 'sub')::uuid, p_conversation_id, p_message_id, p_usage,
                                   (pl.plan).name);
  perform avatar_chat.act_as(claims);
  -- A minor's reply is moderated with the minors' actions (docs/safety.md).
  is_minor := coalesce((auth.jwt() -> 'app_metadata' -> 'minor') = 'true'::jsonb, false)
              or exists (select from public.user_safety s where s.user_id = (select auth.uid()) and s.minor);

  select * into conv from public.conversations c where c.id = p_conversation_id for update;
  if not found then
    raise exception 'No such conversation.' using errcode = 'AC404', hint = 'conversation_not_found';
  end if;

  if p_idempotency_key is not null then
    select * into rp from public.messages m
     where m.conversation_id = conv.id and m.idempotency_key = p_idempotency_key;
    if found then
      select * into um from public.messages m where m.id = rp.reply_to;
      if rp.role <> 'assistant' or (p_new_content is not null and um.content is distinct from p_new_content) then
        raise exception 'This Idempotency-Key was already used for a different request.'
          using errcode = 'AC422', hint = 'idempotency_key_reused';
      end if;
      if rp.status = 'complete' then
        return query select 'replay', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[],
                            um.id, um.seq, um.created_at, um.content,
                            rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            rp.content, rp.persona_version, rp.personality::text, is_minor,
                            (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
        return;
      end if;
      if rp.status = 'streaming' and rp.lease_expires_at > now()
         and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
        return query select 'in_progress', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[],
                            um.id, um.seq, um.created_at, um.content,
                            rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            null::text, null::bigint, null::text, is_minor,
                      (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
        return;
      end if;
      -- Failed, stopped or cut off: the same alternative, a new attempt.
      update public.messages m
         set status = 'streaming', content = '', error_code = null, attempt = m.attempt + 1,
             stop_requested = false, lease_expires_at = now() + make_interval(secs => p_lease_s),
             worker_id = p_worker_id
       where m.id = rp.id
      returning * into rp;
      kind := 'retry';
    end if;
  end if;

  if rp.id is null then
    select * into target from public.messages m where m.id = p_message_id and m.conversation_id = conv.id;
    if not found then
      raise exception 'No such message in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
    end if;
    if kind = 'regenerate' and target.role <> 'assistant' then
      raise exception 'Only a reply can be regenerated; edit a message of yours instead.'
        using errcode = 'AC422', hint = 'not_editable';
    end if;
    if kind = 'edit' and target.role <> 'user' then
      raise exception 'Only your own messages can be edited; regenerate a reply instead.'
        using errcode = 'AC422', hint = 'not_editable';
    end if;
    if kind = 'regenerate' then
      if not target.is_current then
        raise exception 'Only the current reply can be regenerated.' using errcode = 'AC409', hint = 'not_latest';
      end if;
      select * into um from public.messages m where m.id = target.reply_to;
    else
      um := target;
    end if;
    if exists (select from public.messages m
                where m.conversation_id = conv.id and m.role = 'user' and m.seq > um.seq) then
      raise exception 'Only the latest exchange can be regenerated or edited.'
        using errcode = 'AC409', hint = 'not_latest';
    end if;
    if exists (select from public.messages m
                where m.reply_to = um.id and m.status = 'streaming' and m.lease_expires_at > now()
                  and (m.worker_id is null or m.worker_id = any (live_workers))) then
      raise exception 'A reply to this message is still being generated; stop it first.'
        using errcode = 'AC409', hint = 'reply_in_progress';
    end if;
  end if;

  select * into av from public.avatars a where a.user_id = (select auth.uid());
  if not found then
    raise exception 'Create your avatar first (POST /avatars/me).'
      using errcode = 'AC409', hint = 'avatar_required';
  end if;

  if kind <> 'retry' then
    if kind = 'edit' then
      -- The API moderated the new text: a message that was blocked is an ordinary one again.
      update public.messages m set content = p_new_content, status = 'complete'
       where m.id = um.id returning * into um;
    end if;
    select coalesce(max(m.variant), -1) + 1 into next_variant from public.messages m where m.reply_to = um.id;
    update public.messages m set is_current = false where m.reply_to = um.id and m.is_current;
    insert into public.messages (conversation_id, role, content, status, reply_to, variant, is_current,
                                 idempotency_key, lease_expires_at, worker_id)
    values (conv.id, 'assistant', '', 'streaming', um.id, next_variant, true, p_idempotency_key,
            now() + make_interval(secs => p_lease_s), p_worker_id)
    returning * into rp;
  end if;
  select c.revision into conv.revision from public.conversations c where c.id = conv.id;

  if p_window_limit > 0 then
    select coalesce(array_agg(w.seq order by w.seq), '{}'), coalesce(array_agg(w.role::text order by w.seq), '{}'),
           coalesce(array_agg(w.content order by w.seq), '{}'), coalesce(array_agg(w.status::text order by w.seq), '{}')
      into w_seqs, w_roles, w_contents, w_statuses
      from (select m.seq, m.role, m.content, m.status from public.messages m
             where m.conversation_id = conv.id and m.seq < um.seq and m.is_current
             order by m.seq desc limit p_window_limit) w;
  end if;

  return query select kind, conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                      av.id, av.version,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.name end,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.personality::text end,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.backstory end,
                      w_seqs, w_roles, w_contents, w_statuses,
                      um.id, um.seq, um.created_at, um.content,
                      rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                      null::text, null::bigint, null::text, is_minor,
                      (pl.plan).name, (pl.plan).models, (pl.plan).max_reply_tokens;
end
$$;

revoke all on function avatar_chat.begin_regenerate(
  text, uuid, uuid, text, text, double precision, bigint, uuid, bigint, integer, jsonb
) from public, anon, authenticated;

-- end_summary: the summary of begin_summary's claim is saved or has failed: release the
-- claim (if it is still this one) and record what making it cost (p_usage, record_usage's
-- JSON, the user's). Run by the API's own connection.
create function avatar_chat.end_summary(p_conversation_id uuid, p_claim uuid, p_user_id uuid, p_usage jsonb)
returns void
language sql
volatile
set search_path = ''
as $$
  delete from avatar_chat.summary_claims s where s.conversation_id = p_conversation_id and s.token = p_claim;
  select avatar_chat.record_usage(p_user_id, p_conversation_id, null, p_usage, null);
$$;

revoke all on function avatar_chat.end_summary(uuid, uuid, uuid, jsonb) from public, anon, authenticated;
