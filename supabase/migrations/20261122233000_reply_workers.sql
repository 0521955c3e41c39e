-- Faster recovery from a crashed worker. Each API worker holds a session advisory lock
-- on its LISTEN connection, keyed by a random id, for as long as it lives; a reply being
-- generated records that id. A retry with the same Idempotency-Key takes a streaming
-- reply over at once when its worker is gone (lock released with the dead connection),
-- instead of waiting for the lease to end. The lease stays the backstop (NULL worker).

alter table public.messages add column worker_id bigint;
comment on column public.messages.worker_id is
  'While streaming: the API worker generating the reply (alive while it holds advisory lock worker_id).';
grant insert (worker_id), update (worker_id) on public.messages to authenticated;

drop function avatar_chat.begin_turn(text, uuid, text, text, double precision);

-- As in 20261122220000_chat.sql, plus p_worker_id: recorded on the reply, and a reply
-- whose worker is gone no longer counts as in progress.
create function avatar_chat.begin_turn(
  claims text,
  p_conversation_id uuid,
  p_content text,
  p_idempotency_key text,
  p_lease_s double precision,
  p_worker_id bigint
)
returns table (
  outcome text,
  mode public.conversation_mode,
  revision bigint,
  title text,
  prev_seq bigint,
  avatar_id uuid,
  avatar_version bigint,
  user_message public.messages,
  reply public.messages
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
  av_id uuid;
  av_version bigint;
begin
  perform set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);

  select * into conv from public.conversations c where c.id = p_conversation_id for update;
  if not found then
    raise exception 'conversation not found' using errcode = 'AC404';
  end if;

  if p_idempotency_key is not null then
    select * into um from public.messages m
     where m.conversation_id = conv.id and m.idempotency_key = p_idempotency_key;
    if found then
      if um.content is distinct from p_content then
        raise exception 'Idempotency-Key was used for a different message' using errcode = 'AC422';
      end if;
      select * into rp from public.messages m where m.reply_to = um.id order by m.seq limit 1;
      if rp.status = 'complete' then
        return query select 'replay', conv.mode, conv.revision, conv.title, um.seq - 1,
                            null::uuid, null::bigint, um, rp;
        return;
      end if;
      -- Still being generated: the lease runs and its worker still holds its lock.
      if rp.status = 'streaming' and rp.lease_expires_at > now() and (
        rp.worker_id is null or exists (
          select from pg_catalog.pg_locks l
           where l.locktype = 'advisory' and l.granted and l.objsubid = 1
             and l.database = (select d.oid from pg_catalog.pg_database d
                                where d.datname = pg_catalog.current_database())
             and l.classid = (rp.worker_id >> 32)::oid
             and l.objid = (rp.worker_id & 4294967295)::oid
        )
      ) then
        return query select 'in_progress', conv.mode, conv.revision, conv.title, um.seq - 1,
                            null::uuid, null::bigint, um, rp;
        return;
      end if;
    end if;
  end if;

  select a.id, a.version into av_id, av_version from public.avatars a where a.user_id = (select auth.uid());
  if not found then
    raise exception 'create your avatar first' using errcode = 'AC409';
  end if;

  if um.id is not null then
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
    return query select 'retry', conv.mode, conv.revision, conv.title, um.seq - 1,
                        av_id, av_version, um, rp;
    return;
  end if;

  insert into public.messages (conversation_id, role, content, status, idempotency_key)
  values (conv.id, 'user', p_content, 'complete', p_idempotency_key)
  returning * into um;
  insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at, worker_id)
  values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s), p_worker_id)
  returning * into rp;
  return query select 'new', conv.mode, conv.revision, conv.title, conv.last_seq,
                      av_id, av_version, um, rp;
end
$$;

revoke all on function avatar_chat.begin_turn(text, uuid, text, text, double precision, bigint)
  from public, anon, authenticated;
