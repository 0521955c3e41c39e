-- Every model call counts (issue #18).
--
-- * Regenerate and edit count as sends against sends_per_minute (RATE_LIMIT_SENDS_PER_MINUTE),
--   and so does a reply taken up again as a new attempt (a retry with the same
--   Idempotency-Key after it failed, was stopped or its worker died). A user message
--   counts as before and its reply, inserted in the same transaction, is not counted
--   again; a replay of a complete reply, or joining one being generated, counts nothing.
-- * Summaries run one at a time per conversation, across workers: a claim with a lease in
--   avatar_chat.summary_claims, taken in one statement with the messages to fold in
--   (begin_summary) and released when the summary is saved or has failed (end_summary).

-- Raises AC429 with the reason as HINT (rate_limited, too_many_streams) and the seconds
-- to wait as DETAIL {"retry_after": n}. A refused send rolls back with its statement, so
-- it neither counts nor leaves a row behind. A row that messages_assign_seq left
-- unnumbered is about to be refused by RLS: nothing is counted or locked for it, least
-- of all for the user its user_id names.
--
-- Every model call a user asks for counts once against sends_per_minute: a user message
-- (its reply, inserted in the same transaction, is not counted again: the message's id is
-- remembered in the transaction-local setting avatar_chat.counted_send), a streaming reply
-- to a message sent before (regenerate, edit: begin_regenerate), and a reply taken up
-- again as a new attempt (a retry with the same Idempotency-Key after it failed, was
-- stopped or its worker died: messages_enforce_limits_on_retry). A replay of a complete
-- reply, or joining one still being generated, writes no row and counts nothing.
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
  if new.seq is null then
    return new;
  end if;
  select * into lim from avatar_chat.limits where id;
  if not found then
    return new;
  end if;
  if lim.sends_per_minute > 0 and (
    new.role = 'user'
    or (new.role = 'assistant' and new.status = 'streaming'
        and new.reply_to is distinct from nullif(current_setting('avatar_chat.counted_send', true), '')::uuid)
  ) then
    if new.role = 'user' then
      perform set_config('avatar_chat.counted_send', new.id::text, true);
    end if;
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
  end if;
  if new.role = 'assistant' and new.status = 'streaming' and lim.max_concurrent_streams > 0 then
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

-- A reply taken up again (begin_turn's and begin_regenerate's retry: a new attempt) is a
-- model call too. Only an update that sets attempt is considered, so settling or saving a
-- reply never fires it.
create trigger messages_enforce_limits_on_retry
before update of attempt on public.messages
for each row when (new.attempt > old.attempt)
execute function avatar_chat.messages_enforce_limits();

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
               and m.is_current and m.status in ('complete', 'stopped')
             order by m.seq desc limit p_limit) w;
end
$$;

revoke all on function avatar_chat.begin_summary(text, uuid, bigint, bigint, integer, bigint, double precision)
  from public, anon, authenticated;

-- end_summary: the summary of begin_summary's claim is saved or has failed: release the
-- claim (if it is still this one). Run by the API's own connection.
create function avatar_chat.end_summary(p_conversation_id uuid, p_claim uuid)
returns void
language sql
volatile
set search_path = ''
as $$
  delete from avatar_chat.summary_claims s where s.conversation_id = p_conversation_id and s.token = p_claim;
$$;

revoke all on function avatar_chat.end_summary(uuid, uuid) from public, anon, authenticated;
