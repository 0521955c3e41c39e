-- Scale out on one Postgres, through any pooler.
--
-- 1. No NOTIFY on a write path. A transaction with a pending notification takes an
--    instance-wide lock at commit (PreCommit_Notify in Postgres's async.c), which halved
--    avatar-update throughput here. Chat turns never depended on it: they validate what
--    they cached against the versions begin_turn returns.
-- 2. No session state. Worker liveness was a session advisory lock held on a LISTEN
--    connection; neither survives a transaction-mode pooler. It is now a row in
--    avatar_chat.workers with an expiry, renewed by each worker in its own short
--    transaction; a reply names the worker generating it, and a retry takes the reply
--    over once that worker's row has expired (a few seconds after it died).
-- 3. begin_turn answers with plain columns instead of two whole message rows, so the
--    hot path decodes a few scalars rather than two composite records; and it ships the
--    persona and window only when the worker's cache does not match (see below).

drop trigger avatars_notify on public.avatars;
drop function avatar_chat.avatars_notify();
drop trigger conversations_notify on public.conversations;
drop function avatar_chat.conversations_notify();

create table avatar_chat.workers (
  id bigint not null,
  host text not null default '',
  pid integer not null default 0,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint workers_pkey primary key (id),
  constraint workers_host_length check (char_length(host) <= 255)
);
comment on table avatar_chat.workers is
  'API worker processes, alive while expires_at is in the future; each renews its own row.';
revoke all on avatar_chat.workers from public, anon, authenticated;

-- Register or renew a worker for p_ttl_s seconds; rows dead for a day are swept.
create function avatar_chat.worker_heartbeat(p_id bigint, p_ttl_s double precision, p_host text, p_pid integer)
returns void
language sql
volatile
set search_path = ''
as $$
  insert into avatar_chat.workers as w (id, host, pid, expires_at)
  values (p_id, left(p_host, 255), p_pid, now() + make_interval(secs => p_ttl_s))
  on conflict (id) do update
    set heartbeat_at = now(), expires_at = now() + make_interval(secs => p_ttl_s);
  delete from avatar_chat.workers w where w.expires_at < now() - interval '1 day';
$$;
comment on function avatar_chat.worker_heartbeat(bigint, double precision, text, integer) is
  'Register or renew an API worker''s liveness row.';
revoke all on function avatar_chat.worker_heartbeat(bigint, double precision, text, integer)
  from public, anon, authenticated;

-- A worker that shuts down cleanly leaves at once; its replies are settled by then.
create function avatar_chat.worker_leave(p_id bigint)
returns void
language sql
volatile
set search_path = ''
as $$
  delete from avatar_chat.workers w where w.id = p_id;
$$;
comment on function avatar_chat.worker_leave(bigint) is 'Remove an API worker''s liveness row.';
revoke all on function avatar_chat.worker_leave(bigint) from public, anon, authenticated;

comment on column public.messages.worker_id is
  'While streaming: the API worker generating the reply (alive while its avatar_chat.workers row is).';

drop function avatar_chat.begin_turn(text, uuid, text, text, double precision, bigint);

-- begin_turn now also takes what the worker has cached (the avatar's id and version, the
-- window's last seq and revision) and answers with the persona and the recent window
-- only when that cache does not match: a chat turn is two round trips also when its
-- cache misses, and the persona it uses was read in the same snapshot as its version.
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

-- Replies whose worker is gone no longer count against the concurrent-stream limit.
create or replace function avatar_chat.messages_enforce_limits() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  lim avatar_chat.limits;
  sent integer;
  window_start timestamptz := date_trunc('minute', now());
  streaming integer;
begin
  select * into lim from avatar_chat.limits where id;
  if not found then
    return new;
  end if;
  if new.role = 'user' and lim.sends_per_minute > 0 then
    insert into avatar_chat.send_counters as c (user_id, window_start, sends)
    values (new.user_id, window_start, 1)
    on conflict (user_id) do update
      set sends = case when c.window_start = excluded.window_start then c.sends + 1 else 1 end,
          window_start = excluded.window_start
    returning c.sends into sent;
    if sent > lim.sends_per_minute then
      raise exception 'Too many messages this minute; retry later.'
        using errcode = 'AC429', hint = 'rate_limited',
              detail = json_build_object(
                'retry_after',
                greatest(1, ceil(extract(epoch from (window_start + interval '1 minute' - now()))))::integer
              )::text;
    end if;
  elsif new.role = 'assistant' and new.status = 'streaming' and lim.max_concurrent_streams > 0 then
    select count(*) into streaming from public.messages m
     where m.user_id = new.user_id and m.status = 'streaming' and m.lease_expires_at > now()
       and (m.worker_id is null
            or exists (select from avatar_chat.workers w where w.id = m.worker_id and w.expires_at > now()));
    if streaming >= lim.max_concurrent_streams then
      raise exception 'Too many replies are being generated at once; retry when one finishes.'
        using errcode = 'AC429', hint = 'too_many_streams', detail = '{"retry_after": 2}';
    end if;
  end if;
  return new;
end
$$;
