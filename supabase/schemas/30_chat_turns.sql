-- Declarative schema: the live definition of the chat-turn functions (begin_turn,
-- finish_turn, extend_lease).
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
-- So a chat turn is this round trip plus finish_turn, also when its cache misses.
-- Errors: AC404 conversation_not_found (no such conversation, or not yours),
-- AC409 avatar_required, AC422 idempotency_key_reused (same key, different content).
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
  reply_id uuid,
  reply_seq bigint,
  reply_attempt integer,
  reply_created_at timestamptz,
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
      select * into rp from public.messages m where m.reply_to = um.id order by m.seq limit 1;
      if rp.status = 'complete' then
        return query select 'replay', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[],
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at,
                            rp.content, rp.persona_version, rp.personality::text;
        return;
      end if;
      -- Still being generated: the lease runs and its worker is alive.
      if rp.status = 'streaming' and rp.lease_expires_at > now()
         and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
        return query select 'in_progress', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[],
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at,
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
  end if;

  -- The window, unless the worker's cached one ends exactly here (a retry never uses one).
  if p_window_limit > 0 and (
    not is_new or (p_known_window_seq, p_known_window_revision) is distinct from (upto, conv.revision)
  ) then
    select coalesce(array_agg(w.seq order by w.seq), '{}'), coalesce(array_agg(w.role::text order by w.seq), '{}'),
           coalesce(array_agg(w.content order by w.seq), '{}'), coalesce(array_agg(w.status::text order by w.seq), '{}')
      into w_seqs, w_roles, w_contents, w_statuses
      from (select m.seq, m.role, m.content, m.status from public.messages m
             where m.conversation_id = conv.id and m.seq <= upto
             order by m.seq desc limit p_window_limit) w;
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
                      w_seqs, w_roles, w_contents, w_statuses,
                      um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at,
                      null::text, null::bigint, null::text;
end
$$;

revoke all on function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer
) from public, anon, authenticated;

-- finish_turn: settle the reply with what was generated and the persona used. Only the
-- attempt that still owns the reply may settle it; a superseded one gets no row back.
create function avatar_chat.finish_turn(
  claims text,
  p_reply_id uuid,
  p_attempt integer,
  p_content text,
  p_status public.message_status,
  p_error_code text,
  p_persona_version bigint,
  p_personality public.personality_type
)
returns setof public.messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform avatar_chat.act_as(claims);
  return query
    update public.messages m
       set content = p_content, status = p_status, error_code = p_error_code,
           persona_version = p_persona_version, personality = p_personality, lease_expires_at = null
     where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming'
    returning m.*;
end
$$;

revoke all on function avatar_chat.finish_turn(text, uuid, integer, text, public.message_status, text, bigint, public.personality_type)
  from public, anon, authenticated;

-- extend_lease: a worker generating a reply extends its short lease every few seconds
-- (the API's CHAT_REPLY_LEASE_S) instead of taking one long lease up front, so a reply
-- nobody is generating any more (its worker vanished, or the acknowledgement of
-- begin_turn was lost) can be retried within seconds, not minutes. Pushes the lease of a
-- reply this attempt still owns; false when the reply was settled or taken over meanwhile.
create function avatar_chat.extend_lease(claims text, p_reply_id uuid, p_attempt integer, p_lease_s double precision)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform avatar_chat.act_as(claims);
  update public.messages m
     set lease_expires_at = now() + make_interval(secs => p_lease_s)
   where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming';
  return found;
end
$$;

revoke all on function avatar_chat.extend_lease(text, uuid, integer, double precision) from public, anon, authenticated;
