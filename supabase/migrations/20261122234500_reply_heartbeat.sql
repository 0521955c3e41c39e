-- Short, renewed reply leases. A worker generating a reply extends its lease every few
-- seconds (the API's CHAT_REPLY_LEASE_S) instead of taking one long lease up front, so a
-- reply nobody is generating any more (its worker vanished, or the acknowledgement of
-- begin_turn was lost) can be retried within seconds, not minutes.

-- One round trip: take the caller's role and claims, push the lease of a reply this
-- attempt still owns. False when the reply was settled or taken over meanwhile.
create function avatar_chat.extend_lease(claims text, p_reply_id uuid, p_attempt integer, p_lease_s double precision)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);
  update public.messages m
     set lease_expires_at = now() + make_interval(secs => p_lease_s)
   where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming';
  return found;
end
$$;

revoke all on function avatar_chat.extend_lease(text, uuid, integer, double precision) from public, anon, authenticated;
