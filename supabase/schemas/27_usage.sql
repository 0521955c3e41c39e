-- Declarative schema: the live definition of usage and plans (docs/usage.md): the plans
-- the operator defines (public.plans), each user's plan and time zone (public.user_plans),
-- what every model call cost (public.usage_records), each user's running totals for the
-- quota windows (avatar_chat.usage_counters), the operator's views, and GET /me/usage.
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration.
-- tests/core/test_schema_files.py fails while the two disagree.
--
-- Nothing here is cached by a worker: a turn reads the user's plan in the transaction that
-- admits it (the messages_enforce_limits trigger, 40_limits.sql; begin_turn and
-- begin_regenerate, 30_chat_turns.sql), so an edit in the dashboard holds from the next
-- request on, on every worker. The quotas are enforced by that trigger, under the row lock
-- of the user's usage_counters row: two workers cannot both spend the last of a quota.

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
