-- Replies cost what the demand for them costs (issue #17).
--
-- A reply being generated used to save its text and renew its lease in a transaction of
-- its own every CHAT_PARTIAL_SAVE_MS, about one UPDATE per chunk, whether or not anyone
-- but its own client read it. Now:
--   * reply_progress marks a streaming reply followed (messages.followed_at) the first
--     time a client follows it or waits for it to stop; request_stop already sets
--     stop_requested. Both put the reply in messages_worker_id_demand_idx.
--   * avatar_chat.worker_replies: every CHAT_DEMAND_POLL_MS while a worker generates
--     replies, one round trip renews the leases of those with less than half left (in one
--     statement for all of them) and answers which of them are followed or asked to stop.
--     Only those are saved as they grow.
--   * begin_turn names a conversation without a title after its first message, in the
--     transaction that saves it (it was a transaction of its own after the reply).

alter table public.messages add column followed_at timestamptz;
comment on column public.messages.followed_at is
  'While streaming: when a client first followed the reply; its worker saves the text as it grows from then on.';
grant update (followed_at) on public.messages to authenticated;

-- The replies a worker generates that someone follows or asked to stop
-- (avatar_chat.worker_replies): only those rows are in it, so the others' writes skip it.
create index messages_worker_id_demand_idx on public.messages (worker_id)
  where status = 'streaming' and (stop_requested or followed_at is not null);

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
  p_known_summary_seq bigint
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
  reply_personality text
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
  live_workers bigint[];
  upto bigint;
  w_seqs bigint[];
  w_roles text[];
  w_contents text[];
  w_statuses text[];
  is_new boolean;
  s_seq bigint;
  s_content text;
begin
  if p_idempotency_key is not null then
    -- Read before acting as the user: the API roles cannot see avatar_chat.workers.
    live_workers := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  end if;
  perform avatar_chat.act_as(claims);

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
      if rp.status = 'complete' then
        return query select 'replay', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            rp.content, rp.persona_version, rp.personality::text;
        return;
      end if;
      -- Still being generated: the lease runs and its worker is alive.
      if rp.status = 'streaming' and rp.lease_expires_at > now()
         and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
        return query select 'in_progress', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            null::text, null::bigint, null::text;
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
    insert into public.messages (conversation_id, role, content, status, idempotency_key)
    values (conv.id, 'user', p_content, 'complete', p_idempotency_key)
    returning * into um;
    insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at, worker_id)
    values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s), p_worker_id)
    returning * into rp;
    upto := conv.last_seq;
    if conv.title is null then
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
  if p_window_limit > 0 and (
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
  select s.covers_upto_seq, s.content into s_seq, s_content
    from public.conversation_summaries s
   where s.conversation_id = conv.id and s.revision = conv.revision and s.covers_upto_seq <= upto;
  if (s_seq, conv.revision) is not distinct from (p_known_summary_seq, p_known_window_revision) then
    s_content := null;
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
                      null::text, null::bigint, null::text;
end
$$;


create or replace function avatar_chat.reply_progress(claims text, p_conversation_id uuid, p_message_id uuid, p_offset integer)
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
  created_at timestamptz
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
   where m.id = p_message_id and m.conversation_id = p_conversation_id and m.role = 'assistant';
  if not found then
    raise exception 'No such reply in this conversation.' using errcode = 'AC404', hint = 'message_not_found';
  end if;
  if rp.status = 'streaming' and rp.followed_at is null then
    update public.messages m set followed_at = now() where m.id = rp.id and m.followed_at is null;
  end if;
  return query
    select rp.seq, rp.status::text, rp.attempt, char_length(rp.content),
           substring(rp.content from greatest(p_offset, 0) + 1), rp.lease_expires_at, rp.error_code,
           rp.persona_version, rp.personality::text, rp.variant, rp.is_current, rp.reply_to, rp.created_at;
end
$$;


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
