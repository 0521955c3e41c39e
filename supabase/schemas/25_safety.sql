-- Declarative schema: the live definition of what the safety protocol keeps
-- (docs/safety.md): who is a minor (public.user_safety), each user's continuing
-- interaction (avatar_chat.interactions), the safety events (avatar_chat.safety_events) and
-- their anonymous monthly counts (avatar_chat.safety_counts), and the yearly report.
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration.
-- tests/core/test_schema_files.py fails while the two disagree.
--
-- The chat turn (30_chat_turns.sql: begin_turn, finish_turn) writes the interaction and
-- the events itself, after the user's work, as the connecting role (set role none): users
-- can neither read nor write any of it, through this API or the Data API.

-- Who is a minor: set by the operator (the dashboard, the service role), never by the
-- user. A user is also a minor when their JWT's app_metadata says "minor": true (which
-- only the Auth admin API can set). Read at every turn: an edit takes effect at once.
create table public.user_safety (
  user_id uuid not null,
  minor boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint user_safety_pkey primary key (user_id),
  constraint user_safety_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table public.user_safety is
  'Safety settings of a user that only the operator sets (dashboard, service role): read at every chat turn.';
comment on column public.user_safety.minor is
  'The user is a minor: break reminders, the AI disclosure at the same cadence, sexual content blocked both ways.';

alter table public.user_safety enable row level security;
create policy user_safety_select_own on public.user_safety
  for select to authenticated using ((select auth.uid()) = user_id);
revoke all on public.user_safety from public, anon, authenticated;
grant select on public.user_safety to authenticated;
grant all on public.user_safety to service_role;

-- A user's continuing interaction: it started at started_at and goes on while messages
-- follow each other with gaps shorter than the configured gap (30 minutes by default);
-- last_at is their latest message (to the minute: written when a minute old). disclosed_at
-- and reminded_at: the latest AI disclosure and break reminder of this interaction (null:
-- none yet). Read at the start of begin_turn under a transaction-scoped advisory lock on
-- the user, so a user's turns on every worker decide one after the other.
create table avatar_chat.interactions (
  user_id uuid not null,
  started_at timestamptz not null,
  last_at timestamptz not null,
  disclosed_at timestamptz,
  reminded_at timestamptz,
  constraint interactions_pkey primary key (user_id),
  constraint interactions_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table avatar_chat.interactions is
  'Each user''s continuing interaction, for the AI disclosure and break reminder cadences (docs/safety.md).';

-- What moderation did, one row per event: a message blocked, a crisis notice issued, a
-- reply filtered, a message that went on unchecked because the provider failed and the
-- fail mode is open. No text is kept. Deleted with the account; the conversation and
-- message ids are for the operator's audit and may name rows deleted since.
create table avatar_chat.safety_events (
  id bigint generated always as identity,
  occurred_at timestamptz not null default now(),
  user_id uuid not null,
  conversation_id uuid,
  message_id uuid,
  direction text not null,
  action text not null,
  categories text[] not null default '{}',
  provider text not null,
  constraint safety_events_pkey primary key (id),
  constraint safety_events_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint safety_events_direction check (direction in ('in', 'out')),
  constraint safety_events_action check (action in ('block', 'crisis', 'filter', 'unchecked')),
  constraint safety_events_provider_length check (char_length(provider) <= 100)
);
comment on table avatar_chat.safety_events is
  'Moderation events (blocked, crisis notice, filtered, unchecked); users cannot read or write them. Deleted with the account.';
comment on column avatar_chat.safety_events.direction is 'in: the user''s message; out: the avatar''s reply.';
comment on column avatar_chat.safety_events.action is
  'block: the message was refused; crisis: a crisis notice was issued; filter: the reply was stopped and replaced; unchecked: the provider failed and the fail mode is open.';
create index safety_events_user_id_idx on avatar_chat.safety_events (user_id);
create index safety_events_occurred_at_idx on avatar_chat.safety_events (occurred_at);

-- In the private schema, which the API roles cannot even reach; RLS on and no policy as
-- well, should a grant ever be given by mistake.
alter table avatar_chat.safety_events enable row level security;
revoke all on avatar_chat.safety_events from public, anon, authenticated;

-- The same events counted by month, direction, action and category (category 'all': the
-- events themselves, whatever their categories). Anonymous, so they outlive deleted
-- accounts: the yearly report counts what was issued that year.
create table avatar_chat.safety_counts (
  month date not null,
  direction text not null,
  action text not null,
  category text not null,
  events bigint not null default 0,
  constraint safety_counts_pkey primary key (month, direction, action, category)
);
comment on table avatar_chat.safety_counts is
  'Safety events counted by month, direction, action and category (''all'': every event); no user identifiers.';

-- Record one event and count it. Run as the connecting role (never by a user).
create function avatar_chat.record_safety_event(
  p_user_id uuid,
  p_conversation_id uuid,
  p_message_id uuid,
  p_direction text,
  p_action text,
  p_categories text[],
  p_provider text
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  insert into avatar_chat.safety_events (user_id, conversation_id, message_id, direction, action, categories, provider)
  values (p_user_id, p_conversation_id, p_message_id, p_direction, p_action, coalesce(p_categories, '{}'), p_provider);
  insert into avatar_chat.safety_counts as s (month, direction, action, category, events)
  select date_trunc('month', now() at time zone 'UTC')::date, p_direction, p_action, c, 1
    from unnest(array['all'] || coalesce(p_categories, '{}')) c
  on conflict (month, direction, action, category) do update set events = s.events + 1;
end
$$;
revoke all on function avatar_chat.record_safety_event(uuid, uuid, uuid, text, text, text[], text)
  from public, anon, authenticated;

-- record_refusal: an edit that moderation refused (the edit is not applied): the event,
-- for a message of the caller's own. Errors: AC404 message_not_found.
create function avatar_chat.record_refusal(
  claims text, p_conversation_id uuid, p_message_id uuid, p_action text, p_categories text[], p_provider text
)
returns void
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  me uuid;
begin
  perform avatar_chat.act_as(claims);
  me := (select auth.uid());
  if not exists (select from public.messages m where m.id = p_message_id and m.conversation_id = p_conversation_id) then
    raise exception 'No such message in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
  end if;
  perform set_config('role', 'none', true);  -- back to the connecting role: users cannot write events
  perform avatar_chat.record_safety_event(me, p_conversation_id, p_message_id, 'in', p_action, p_categories, p_provider);
end
$$;
revoke all on function avatar_chat.record_refusal(text, uuid, uuid, text, text[], text) from public, anon, authenticated;

-- safety_report: for a calendar year (UTC), the crisis referral notices issued, by month
-- and category ('all': the notices themselves), from the anonymous counts. What the
-- yearly report states; `avatar-chat safety-report --year N` prints it with the protocol.
create function avatar_chat.safety_report(p_year integer)
returns table (month date, category text, notices bigint)
language sql
stable
set search_path = ''
as $$
  select s.month, s.category, sum(s.events)::bigint
    from avatar_chat.safety_counts s
   where s.action = 'crisis' and s.month >= make_date(p_year, 1, 1) and s.month < make_date(p_year + 1, 1, 1)
   group by s.month, s.category
   order by s.month, s.category = 'all' desc, s.category;
$$;
comment on function avatar_chat.safety_report(integer) is
  'Crisis referral notices issued in a calendar year, by month and category (''all'': every notice). No user identifiers.';
revoke all on function avatar_chat.safety_report(integer) from public, anon, authenticated;
