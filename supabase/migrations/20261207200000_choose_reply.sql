-- Choosing which alternative reply of an exchange is current (PUT .../messages/{id}/current).
-- Declarative definition: supabase/schemas/30_chat_turns.sql.

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
