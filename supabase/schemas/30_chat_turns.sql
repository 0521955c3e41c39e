-- Declarative schema: the live definition of the chat-turn functions (begin_turn,
-- finish_turn, save_partial, worker_replies, request_stop, reply_progress,
-- begin_regenerate, delete_message, choose_reply, save_summary) and of the summary claims
-- (avatar_chat.summary_claims, begin_summary, end_summary).
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration
-- (`supabase db diff -f <name>` drafts one; comments, column grants and publication
-- membership it does not see, so write those by hand). tests/core/test_schema_files.py
-- fails while the two disagree.
--
-- The writes of a chat turn, each one round trip: the functions take the caller's role
-- and claims themselves (avatar_chat.act_as, as the Data API does), so RLS applies to
-- every statement.

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
-- quota_exceeded rolls the whole turn back. The plan is read once, here: the trigger gets
-- it for the rows written here from the transaction-local setting avatar_chat.turn_plan.
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
  -- The user's interaction (avatar_chat.interactions) in scalars, never in a variable of
  -- that row type: PL/pgSQL looks a named row type up again by name when its cache entry
  -- was invalidated (the table analyzed, say), as the current user, who is `authenticated`
  -- by then and has no USAGE on avatar_chat: 42501, the turn refused.
  ia_found boolean := false;
  ia_started_at timestamptz;
  ia_last_at timestamptz;
  ia_disclosed_at timestamptz;
  ia_reminded_at timestamptz;
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
  turn_plan text;
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
    select i.started_at, i.last_at, i.disclosed_at, i.reminded_at
      into ia_started_at, ia_last_at, ia_disclosed_at, ia_reminded_at
      from avatar_chat.interactions i where i.user_id = me;
    ia_found := found;
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
  -- The plan read above, handed to the messages_enforce_limits trigger of the rows written
  -- next (the user's message, the reply), which would otherwise read it again for each:
  -- transaction-local, for this user, this token's plan and this transaction only, and
  -- cleared once they are written (an assignment, not a statement).
  turn_plan := set_config('avatar_chat.turn_plan', jsonb_build_object(
    'user', me, 'token_plan', claims::jsonb -> 'app_metadata' ->> 'plan', 'xact', pg_current_xact_id(),
    'time_zone', pl.time_zone, 'plan', to_jsonb(pl.plan))::text, true);
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
      fresh := not ia_found or ia_last_at <= now() - make_interval(secs => (p_safety ->> 'gap_s')::float8);
      if fresh then
        ia_started_at := now(); ia_last_at := now(); ia_disclosed_at := null; ia_reminded_at := null;
        ia_changed := true;
      end if;
      if p_safety ->> 'disclosure' is not null and (
        conv.last_seq = 0 or ia_disclosed_at is null
        or ia_disclosed_at <= now() - make_interval(secs => (p_safety ->> 'every_s')::float8)
      ) then
        insert into public.messages (conversation_id, role, content, status, notice_kind)
        values (conv.id, 'notice', p_safety ->> 'disclosure', 'complete', 'disclosure')
        returning * into nt;
        ia_disclosed_at := now();
        ia_changed := true;
        n_ids := n_ids || nt.id; n_seqs := n_seqs || nt.seq; n_kinds := n_kinds || 'disclosure'::text;
        n_contents := n_contents || nt.content; n_ats := n_ats || nt.created_at;
      end if;
      if is_minor and p_safety ->> 'break' is not null
         and greatest(ia_started_at, ia_reminded_at) <= now() - make_interval(secs => (p_safety ->> 'every_s')::float8) then
        insert into public.messages (conversation_id, role, content, status, notice_kind)
        values (conv.id, 'notice', p_safety ->> 'break', 'complete', 'break')
        returning * into nt;
        ia_reminded_at := now();
        ia_changed := true;
        n_ids := n_ids || nt.id; n_seqs := n_seqs || nt.seq; n_kinds := n_kinds || 'break'::text;
        n_contents := n_contents || nt.content; n_ats := n_ats || nt.created_at;
      end if;
      -- The interaction's latest message, kept to the minute: a user's every turn need not
      -- write it (the gap that ends an interaction is counted in tens of minutes).
      if ia_changed or ia_last_at < now() - interval '1 minute' then
        ia_last_at := now();
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
  turn_plan := set_config('avatar_chat.turn_plan', '', true);

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
      values (me, ia_started_at, ia_last_at, ia_disclosed_at, ia_reminded_at)
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

-- save_partial: a worker generating a reply saves its text so far (null: keep the saved
-- text, only renew the lease). Answers stop_requested, or null when the reply is no longer
-- this attempt's to write (settled, stopped from elsewhere, or taken over).
create function avatar_chat.save_partial(
  claims text, p_reply_id uuid, p_attempt integer, p_content text, p_lease_s double precision
)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  wants_stop boolean;
begin
  perform avatar_chat.act_as(claims);
  update public.messages m
     set content = coalesce(p_content, m.content),
         lease_expires_at = now() + make_interval(secs => p_lease_s)
   where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming'
  returning m.stop_requested into wants_stop;
  return wants_stop;
end
$$;

revoke all on function avatar_chat.save_partial(text, uuid, integer, text, double precision)
  from public, anon, authenticated;

-- worker_replies: what a worker generating replies asks every CHAT_DEMAND_POLL_MS while
-- it has any, in one round trip. The leases of p_renew (its replies, passed every quarter
-- lease) that have less than half left are renewed; and it learns which of its replies a
-- client follows (reply_progress) or asked to stop (request_stop): it saves those as they
-- grow, and no others. Run by the API's own connection (like worker_heartbeat), for every
-- user's replies at once.
create function avatar_chat.worker_replies(p_worker_id bigint, p_renew uuid[], p_lease_s double precision)
returns table (id uuid, stop_requested boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if cardinality(p_renew) > 0 then
    update public.messages m
       set lease_expires_at = now() + make_interval(secs => p_lease_s)
     where m.id = any (p_renew) and m.status = 'streaming'
       and m.lease_expires_at < now() + make_interval(secs => p_lease_s / 2);
  end if;
  return query
    select m.id, m.stop_requested from public.messages m
     where m.worker_id = p_worker_id and m.status = 'streaming' and (m.stop_requested or m.followed_at is not null);
end
$$;

revoke all on function avatar_chat.worker_replies(bigint, uuid[], double precision) from public, anon, authenticated;

-- request_stop: ask the worker generating a reply to stop. When no live worker generates
-- it (its lease ran out, or its worker's liveness row expired), settle it here as
-- stopped with the text saved so far. A settled reply is left as it is (stop is a no-op).
-- Errors: AC404 message_not_found (not an assistant message of this conversation, or not yours).
create function avatar_chat.request_stop(claims text, p_conversation_id uuid, p_message_id uuid)
returns setof public.messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  live_workers bigint[] := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  rp public.messages;
begin
  perform avatar_chat.act_as(claims);
  select * into rp from public.messages m
   where m.id = p_message_id and m.conversation_id = p_conversation_id and m.role = 'assistant'
   for update;
  if not found then
    raise exception 'No such reply in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
  end if;
  if rp.status <> 'streaming' then
    return next rp;
    return;
  end if;
  if rp.lease_expires_at > now() and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
    update public.messages m set stop_requested = true where m.id = rp.id returning * into rp;
  else
    update public.messages m
       set status = 'stopped', stop_requested = true, lease_expires_at = null
     where m.id = rp.id
    returning * into rp;
  end if;
  return next rp;
end
$$;

revoke all on function avatar_chat.request_stop(text, uuid, uuid) from public, anon, authenticated;

-- reply_progress: a reply as a follower needs it: its state, and its text from a
-- character offset on (so polling a long reply sends only what is new). A follower of a
-- streaming reply is the demand for its text: the first call marks it followed
-- (followed_at), and its worker (avatar_chat.worker_replies) saves it as it grows from then on.
-- A safety notice (role notice) is followed like a reply: it is complete when saved.
-- Errors: AC404 message_not_found.
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

-- delete_message: delete a message of yours (a user message takes its replies with it).
-- Deleting the current alternative makes the newest remaining one current. seq numbers
-- are never reused; the delete bumps the conversation's revision (existing trigger).
-- Errors: AC404 conversation_not_found, message_not_found; AC409 reply_in_progress.
create function avatar_chat.delete_message(claims text, p_conversation_id uuid, p_message_id uuid)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  conv public.conversations;
  target public.messages;
  live_workers bigint[] := array(select w.id from avatar_chat.workers w where w.expires_at > now());
begin
  perform avatar_chat.act_as(claims);
  select * into conv from public.conversations c where c.id = p_conversation_id for update;
  if not found then
    raise exception 'No such conversation.' using errcode = 'AC404', hint = 'conversation_not_found';
  end if;
  select * into target from public.messages m where m.id = p_message_id and m.conversation_id = conv.id;
  if not found then
    raise exception 'No such message in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
  end if;
  if exists (select from public.messages m
              where (m.id = target.id or m.reply_to = target.id) and m.status = 'streaming'
                and m.lease_expires_at > now() and (m.worker_id is null or m.worker_id = any (live_workers))) then
    raise exception 'This reply is still being generated; stop it first.'
      using errcode = 'AC409', hint = 'reply_in_progress';
  end if;
  delete from public.messages m where m.id = target.id;
  if target.role = 'assistant' and target.is_current then
    update public.messages m set is_current = true
     where m.id = (select s.id from public.messages s where s.reply_to = target.reply_to
                    order by s.variant desc limit 1);
  end if;
  return true;
end
$$;

revoke all on function avatar_chat.delete_message(text, uuid, uuid) from public, anon, authenticated;

-- choose_reply: make the reply p_message_id the current alternative of its exchange (the
-- one history shows and the model reads next): the exchange's other replies stop being
-- current. The update bumps the conversation's revision (messages_touch_revision), so no
-- worker's cached window of it is used again. Choosing the current one changes nothing.
-- Errors: AC404 conversation_not_found, message_not_found (not a reply of this
-- conversation, or not yours); AC409 reply_in_progress (a reply to the same message is
-- still being generated: it would become current when it ends).
create function avatar_chat.choose_reply(claims text, p_conversation_id uuid, p_message_id uuid)
returns setof public.messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  live_workers bigint[] := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  target public.messages;
begin
  perform avatar_chat.act_as(claims);
  perform from public.conversations c where c.id = p_conversation_id for update;
  if not found then
    raise exception 'No such conversation.' using errcode = 'AC404', hint = 'conversation_not_found';
  end if;
  select * into target from public.messages m
   where m.id = p_message_id and m.conversation_id = p_conversation_id and m.role = 'assistant';
  if not found then
    raise exception 'No such reply in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
  end if;
  if target.is_current then
    return next target;
    return;
  end if;
  if exists (select from public.messages m
              where m.reply_to = target.reply_to and m.status = 'streaming' and m.lease_expires_at > now()
                and (m.worker_id is null or m.worker_id = any (live_workers))) then
    raise exception 'A reply to this message is still being generated; stop it first.'
      using errcode = 'AC409', hint = 'reply_in_progress';
  end if;
  update public.messages m set is_current = false where m.reply_to = target.reply_to and m.is_current;
  update public.messages m set is_current = true where m.id = target.id returning * into target;
  return next target;
end
$$;

revoke all on function avatar_chat.choose_reply(text, uuid, uuid) from public, anon, authenticated;

-- save_summary: store a summary made at p_revision, if that is still the conversation's
-- revision and it covers more than the one stored (or the stored one is older). One
-- statement: all of it or nothing. True when it was stored.
create function avatar_chat.save_summary(
  claims text, p_conversation_id uuid, p_covers_upto_seq bigint, p_revision bigint, p_content text
)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  stored boolean;
begin
  perform avatar_chat.act_as(claims);
  insert into public.conversation_summaries as s (conversation_id, covers_upto_seq, revision, content)
  select c.id, p_covers_upto_seq, p_revision, p_content
    from public.conversations c
   where c.id = p_conversation_id and c.revision = p_revision
  on conflict (conversation_id) do update
    set covers_upto_seq = excluded.covers_upto_seq, revision = excluded.revision,
        content = excluded.content, updated_at = now()
    where (s.revision, s.covers_upto_seq) < (excluded.revision, excluded.covers_upto_seq)
  returning true into stored;
  return coalesce(stored, false);
end
$$;

revoke all on function avatar_chat.save_summary(text, uuid, bigint, bigint, text) from public, anon, authenticated;

-- Summaries run one at a time per conversation, across workers: a worker claims the
-- conversation's row here (one statement, in begin_summary) before it asks the model, and
-- deletes its claim (end_summary) once the summary is saved or has failed. A claim whose
-- lease ran out, or whose worker's liveness row expired (avatar_chat.workers), may be taken
-- over; a summary that finds a live claim does not start (the next turn that finds one
-- due tries again).
create table avatar_chat.summary_claims (
  conversation_id uuid not null,
  token uuid not null default gen_random_uuid(),
  worker_id bigint,
  claimed_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint summary_claims_pkey primary key (conversation_id),
  constraint summary_claims_conversation_id_fkey foreign key (conversation_id)
    references public.conversations (id) on delete cascade
);
comment on table avatar_chat.summary_claims is
  'The summary being made of a conversation, by which worker, until when (one at a time).';
revoke all on avatar_chat.summary_claims from public, anon, authenticated;

-- begin_summary: claim the conversation's summary for p_lease_s seconds (p_worker_id
-- names the claiming worker) and, if claimed, return the current, shown messages in
-- (p_after_seq, p_upto_seq] to fold in, oldest first (the last p_limit), read as the user.
-- One round trip. claim is null when another worker's summary of it is running: nothing
-- is returned and nothing is to be done.
create function avatar_chat.begin_summary(
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
