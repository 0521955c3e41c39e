-- Cross-user references through the Data API.
--
-- Acting as one user in SQL, as PostgREST does, two inserts into public.messages told
-- that user something about another user's rows:
--   * reply_to was unchecked: a row could name another user's message. The insert then
--     failed on messages_reply_to_current_key (is_current) or passed, where a made-up id
--     failed on the foreign key. That told whether the message exists and whether it has
--     a current reply, and it let a user take the current-reply slot of a message that
--     is not theirs.
--   * messages_assign_seq (SECURITY DEFINER, a BEFORE trigger, so it runs before RLS)
--     answered "conversation does not exist" for a made-up conversation id. For someone
--     else's conversation it locked and bumped that conversation, and RLS then answered
--     with its own error. On the way, messages_enforce_limits counted the send against
--     whatever user_id the row named. It could answer AC429 for that user and wait on
--     their counter's row lock.
--
-- Now a user's row may only reply to a message of theirs in the same conversation
-- (messages_insert_own). A row that a user may not write touches nothing: the seq trigger
-- numbers only a row of the caller's own in a conversation of the caller's own. Any other
-- row is left unnumbered and RLS refuses it, with the same error whether the conversation
-- is someone else's or does not exist. The limits trigger counts nothing for an
-- unnumbered row. Where no user acts (the dashboard, service_role: auth.uid() is null) RLS
-- does not apply, and a missing conversation is still a foreign key error.

-- is_my_message: whether a message is the caller's and in this conversation, for
-- messages_insert_own. A policy on public.messages cannot read public.messages itself
-- (Postgres reports infinite recursion), so this reads it as its owner and checks the
-- owner by hand. It tells the caller only about their own messages. EXECUTE is for the
-- policy: the API roles have no USAGE on avatar_chat, so they cannot call it by name.
create function avatar_chat.is_my_message(p_message_id uuid, p_conversation_id uuid)
returns boolean
language sql
stable
security definer
set search_path = ''
as $$
  select exists (
    select from public.messages m
     where m.id = p_message_id and m.conversation_id = p_conversation_id and m.user_id = (select auth.uid())
  );
$$;
comment on function avatar_chat.is_my_message(uuid, uuid) is
  'Whether the message is the caller''s and in this conversation (for messages_insert_own).';
revoke all on function avatar_chat.is_my_message(uuid, uuid) from public, anon, authenticated;
grant execute on function avatar_chat.is_my_message(uuid, uuid) to authenticated;

alter policy messages_insert_own on public.messages
  with check (
    (select auth.uid()) = user_id
    and exists (
      select from public.conversations c
       where c.id = conversation_id and c.user_id = (select auth.uid())
    )
    and (reply_to is null or avatar_chat.is_my_message(reply_to, conversation_id))
  );

-- Allocates seq under the conversation's row lock. SECURITY DEFINER because the API
-- roles may not write last_seq themselves. Where a user acts (auth.uid() set: this API,
-- the Data API) it numbers only their own row in their own conversation. Any other row
-- is left unnumbered, so nobody else's conversation is locked or bumped. That row is
-- refused by messages_insert_own, with the same RLS error whether the conversation is
-- someone else's or does not exist; should RLS ever pass it, its null seq fails
-- not-null. A valid user token always names its user; auth.uid() is null only where RLS
-- does not apply (the dashboard, service_role), and there a missing conversation is a
-- foreign key error.
create or replace function avatar_chat.messages_assign_seq() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  me uuid := auth.uid();
begin
  update public.conversations c
     set last_seq = c.last_seq + 1, updated_at = now()
   where c.id = new.conversation_id
     and (me is null or (c.user_id = me and new.user_id = me))
  returning c.last_seq into new.seq;
  if new.seq is null and me is null then
    raise foreign_key_violation using
      message = 'conversation does not exist', constraint = 'messages_conversation_id_fkey';
  end if;
  new.created_at := now();
  new.updated_at := now();
  return new;
end
$$;

-- Raises AC429 with the reason as HINT (rate_limited, too_many_streams) and the seconds
-- to wait as DETAIL {"retry_after": n}. A refused send rolls back with its statement, so
-- it neither counts nor leaves a row behind. A row that messages_assign_seq left
-- unnumbered is about to be refused by RLS: nothing is counted or locked for it, least
-- of all for the user its user_id names.
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

-- Rows made through the hole before this migration: a message replying to a message of
-- another user or another conversation. This API never wrote one. They hold other
-- users' current-reply slots (a regenerate or a delete of theirs would fail on
-- messages_reply_to_current_key), so they go, with their own replies (on delete cascade).
do $$
declare
  removed bigint;
begin
  delete from public.messages m
   using public.messages r
   where m.reply_to = r.id
     and (r.user_id <> m.user_id or r.conversation_id <> m.conversation_id);
  get diagnostics removed = row_count;
  if removed > 0 then
    raise notice 'removed % message(s) replying to a message of another user or conversation', removed;
  end if;
end
$$;
