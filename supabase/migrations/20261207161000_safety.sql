-- Safety for companion apps (issue #19), part 2 (docs/safety.md):
--
-- * Notices are messages of their own (role notice, notice_kind disclosure, break or
--   crisis); a row with role notice must have a kind.
-- * public.user_safety: who is a minor, set by the operator only.
-- * avatar_chat.interactions: each user's continuing interaction (the cadences of the AI
--   disclosure and, for minors, the break reminder).
-- * avatar_chat.safety_events (no user access, deleted with the account) and their anonymous
--   monthly counts avatar_chat.safety_counts; avatar_chat.safety_report(year).
-- * begin_turn takes moderation's verdict and the notices' texts (p_safety) and writes
--   the notices, a blocked message, the interaction and the events in its one round trip;
--   finish_turn records what moderation of the reply did (p_moderation).
-- * begin_regenerate also answers whether the user is a minor (their reply is moderated
--   with the minors' actions).
-- * reply_progress follows a notice like a reply, and says which role and kind it has.
-- * Summaries never fold notices in.

alter table public.messages add column notice_kind public.notice_kind;
alter table public.messages add constraint messages_notice_kind check ((role = 'notice') = (notice_kind is not null));
comment on column public.messages.notice_kind is
  'For a notice (role notice), which one. Written by the chat turn; what counts (safety events, the report) is not derived from these rows.';
-- begin_turn writes notices as the user, like every message of theirs; a notice a user
-- writes through the Data API is in their own conversation only, and counts nowhere.
grant insert (notice_kind) on public.messages to authenticated;

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

drop function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer, bigint
);

-- begin_turn: see supabase/schemas/30_chat_turns.sql for what it does.
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
  notice_created_ats timestamptz[]
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
begin
  if p_idempotency_key is not null then
    -- Read before acting as the user: the API roles cannot see avatar_chat.workers.
    live_workers := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  end if;
  if p_safety is not null then
    -- The user's interaction, before anything else is locked: their turns on every worker
    -- decide the cadences one after the other (a transaction-scoped advisory lock: held
    -- in memory, nothing written to take it), holding no other lock while they wait here.
    -- act_as checks the claims next, and an error rolls all of it back.
    me := (claims::jsonb ->> 'sub')::uuid;
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
                            false, n_ids, n_seqs, n_kinds, n_contents, n_ats;
        return;
      end if;
      if rp.status = 'complete' then
        return query select 'replay', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            rp.content, rp.persona_version, rp.personality::text,
                            false, n_ids, n_seqs, n_kinds, n_contents, n_ats;
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
                            false, n_ids, n_seqs, n_kinds, n_contents, n_ats;
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
    if rp.id is null then
      return query select case when crisis then 'notice' else 'blocked' end,
                          conv.mode::text, conv.revision, conv.title is null, upto,
                          null::uuid, null::bigint, null::text, null::text, null::text,
                          null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                          um.id, um.seq, um.created_at, null::uuid, null::bigint, null::integer,
                          null::timestamptz, null::integer, null::text, null::bigint, null::text,
                          is_minor, n_ids, n_seqs, n_kinds, n_contents, n_ats;
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
                      is_minor, n_ids, n_seqs, n_kinds, n_contents, n_ats;
end
$$;

revoke all on function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer, bigint, jsonb
) from public, anon, authenticated;

drop function avatar_chat.finish_turn(
  text, uuid, integer, text, public.message_status, text, bigint, public.personality_type
);

create function avatar_chat.finish_turn(
  claims text,
  p_reply_id uuid,
  p_attempt integer,
  p_content text,
  p_status public.message_status,
  p_error_code text,
  p_persona_version bigint,
  p_personality public.personality_type,
  p_moderation jsonb
)
returns setof public.messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  rp public.messages;
begin
  perform avatar_chat.act_as(claims);
  update public.messages m
     set content = p_content, status = p_status, error_code = p_error_code,
         persona_version = p_persona_version, personality = p_personality, lease_expires_at = null
   where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming'
  returning m.* into rp;
  if not found then
    return;
  end if;
  if p_moderation is not null then
    perform set_config('role', 'none', true);  -- as the connecting role: users cannot write events
    perform avatar_chat.record_safety_event(rp.user_id, rp.conversation_id, rp.id, 'out', p_moderation ->> 'action',
      array(select jsonb_array_elements_text(p_moderation -> 'categories')), p_moderation ->> 'provider');
  end if;
  return next rp;
end
$$;

revoke all on function avatar_chat.finish_turn(
  text, uuid, integer, text, public.message_status, text, bigint, public.personality_type, jsonb
) from public, anon, authenticated;

create or replace function avatar_chat.begin_summary(
  claims text,
  p_conversation_id uuid,
  p_after_seq bigint,
  p_upto_seq bigint,
  p_limit integer,
  p_worker_id bigint,
  p_lease_s double precision
)
returns table (claim uuid, seqs bigint[], roles text[], contents text[])
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  live_workers bigint[] := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  won uuid;
begin
  -- Before acting as the user: the API roles cannot see avatar_chat's tables.
  insert into avatar_chat.summary_claims as s (conversation_id, worker_id, expires_at)
  select c.id, p_worker_id, now() + make_interval(secs => p_lease_s)
    from public.conversations c where c.id = p_conversation_id
  on conflict (conversation_id) do update
    set token = gen_random_uuid(), worker_id = excluded.worker_id, claimed_at = now(),
        expires_at = excluded.expires_at
    where s.expires_at <= now() or (s.worker_id is not null and not (s.worker_id = any (live_workers)))
  returning s.token into won;
  if won is null then
    return;
  end if;
  perform avatar_chat.act_as(claims);
  return query
    select won, coalesce(array_agg(w.seq order by w.seq), '{}'), coalesce(array_agg(w.role::text order by w.seq), '{}'),
           coalesce(array_agg(w.content order by w.seq), '{}')
      from (select m.seq, m.role, m.content from public.messages m
             where m.conversation_id = p_conversation_id and m.seq > p_after_seq and m.seq <= p_upto_seq
               and m.is_current and m.status in ('complete', 'stopped') and m.role <> 'notice'
             order by m.seq desc limit p_limit) w;
end
$$;

revoke all on function avatar_chat.begin_summary(text, uuid, bigint, bigint, integer, bigint, double precision)
  from public, anon, authenticated;

drop function avatar_chat.begin_regenerate(
  text, uuid, uuid, text, text, double precision, bigint, uuid, bigint, integer
);

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
  p_window_limit integer
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
  minor boolean
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
begin
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
                            rp.content, rp.persona_version, rp.personality::text, is_minor;
        return;
      end if;
      if rp.status = 'streaming' and rp.lease_expires_at > now()
         and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
        return query select 'in_progress', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[],
                            um.id, um.seq, um.created_at, um.content,
                            rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            null::text, null::bigint, null::text, is_minor;
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
                      null::text, null::bigint, null::text, is_minor;
end
$$;

revoke all on function avatar_chat.begin_regenerate(
  text, uuid, uuid, text, text, double precision, bigint, uuid, bigint, integer
) from public, anon, authenticated;

drop function avatar_chat.reply_progress(text, uuid, uuid, integer);

create function avatar_chat.reply_progress(claims text, p_conversation_id uuid, p_message_id uuid, p_offset integer)
returns table (
  seq bigint,
  status text,
  attempt integer,
  length integer,
  tail text,
  lease_expires_at timestamptz,
  error_code text,
  persona_version bigint,
  personality text,
  variant integer,
  is_current boolean,
  reply_to uuid,
  created_at timestamptz,
  role text,
  notice_kind text
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  rp public.messages;
begin
  perform avatar_chat.act_as(claims);
  select * into rp from public.messages m
   where m.id = p_message_id and m.conversation_id = p_conversation_id and m.role in ('assistant', 'notice');
  if not found then
    raise exception 'No such reply in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
  end if;
  if rp.status = 'streaming' and rp.followed_at is null then
    update public.messages m set followed_at = now() where m.id = rp.id and m.followed_at is null;
  end if;
  return query
    select rp.seq, rp.status::text, rp.attempt, char_length(rp.content),
           substring(rp.content from greatest(p_offset, 0) + 1), rp.lease_expires_at, rp.error_code,
           rp.persona_version, rp.personality::text, rp.variant, rp.is_current, rp.reply_to, rp.created_at,
           rp.role::text, rp.notice_kind::text;
end
$$;

revoke all on function avatar_chat.reply_progress(text, uuid, uuid, integer) from public, anon, authenticated;
