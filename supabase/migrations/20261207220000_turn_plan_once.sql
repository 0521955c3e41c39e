-- The user's plan is read once per chat turn instead of three times. Declarative
-- definitions: supabase/schemas/30_chat_turns.sql (begin_turn) and
-- supabase/schemas/40_limits.sql (messages_enforce_limits).
--
-- begin_turn read the plan (avatar_chat.plan_of) for its answer, and the
-- messages_enforce_limits trigger read it again for the user's message and for the reply
-- placeholder: three plan_of calls per reply. begin_turn now hands the plan it read to the
-- rows it writes in the transaction-local setting avatar_chat.turn_plan (the user, the
-- token's app_metadata.plan and the transaction it is for, the time zone and the plan),
-- cleared once they are written; the trigger uses it only for a row of that user, under
-- the same token plan, in the same transaction, and reads plan_of itself otherwise (the
-- Data API, begin_regenerate, imports). The plan is still read in every request, never
-- cached across transactions, and the quotas are counted under the same row locks.

create or replace function avatar_chat.begin_turn(
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

create or replace function avatar_chat.messages_enforce_limits() returns trigger
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
