-- One way to act as the user, one way to report an error.
--
-- act_as: the role and claims Supabase's Data API sets for a request, transaction-local.
-- Every avatar_chat function that works on a user's behalf calls it first, and so does
-- the API's per-request transaction opener, so the same RLS policies apply everywhere.
--
-- Errors the client can act on are raised as SQLSTATE 'AC' || <HTTP status>, with the
-- human message as MESSAGE, the stable machine-readable code as HINT and, where there
-- is more to say, a JSON object as DETAIL (`retry_after`: seconds, sent as Retry-After;
-- `etag`: the current entity tag, sent as ETag). The API translates every AC<status> in
-- one place (avatar_chat.core.db_errors); no message is ever built from Postgres text.

create function avatar_chat.act_as(claims text)
returns void
language sql
volatile
set search_path = ''
as $$
  select set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);
$$;
comment on function avatar_chat.act_as(text) is
  'Act as the user of these JWT claims until the transaction ends, as the Data API does.';
revoke all on function avatar_chat.act_as(text) from public, anon, authenticated;

create or replace function avatar_chat.update_my_avatar(claims text, changes jsonb, if_match bigint[])
returns setof public.avatars
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  current_version bigint;
begin
  perform avatar_chat.act_as(claims);

  return query
    update public.avatars a
       set name = case when changes ? 'name' then changes ->> 'name' else a.name end,
           personality = case when changes ? 'personality'
                              then (changes ->> 'personality')::public.personality_type
                              else a.personality end,
           backstory = case when changes ? 'backstory' then changes ->> 'backstory' else a.backstory end
     where a.user_id = (select auth.uid())
       and (if_match is null or a.version = any (if_match))
    returning a.*;

  if not found and if_match is not null then
    select a.version into current_version from public.avatars a where a.user_id = (select auth.uid());
    if found then
      raise exception 'If-Match does not match the avatar''s current version (%).', current_version
        using errcode = 'AC412', hint = 'precondition_failed',
              detail = json_build_object('etag', format('"%s"', current_version))::text;
    end if;
  end if;
end
$$;

create or replace function avatar_chat.begin_turn(
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
    raise exception 'Create your avatar first (POST /avatars/me).'
      using errcode = 'AC409', hint = 'avatar_required';
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

create or replace function avatar_chat.finish_turn(
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

create or replace function avatar_chat.extend_lease(claims text, p_reply_id uuid, p_attempt integer, p_lease_s double precision)
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
     where m.user_id = new.user_id and m.status = 'streaming' and m.lease_expires_at > now();
    if streaming >= lim.max_concurrent_streams then
      raise exception 'Too many replies are being generated at once; retry when one finishes.'
        using errcode = 'AC429', hint = 'too_many_streams', detail = '{"retry_after": 2}';
    end if;
  end if;
  return new;
end
$$;
