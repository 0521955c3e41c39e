-- Cheaper user checks on every chat turn (issue #17, measured with
-- `./bench/run turn_statements`: pg_stat_statements on a PostgreSQL 15 cluster).
--
-- * act_as parsed the claims JSON inside its auth.users probe. With a few hundred users
--   the planner chose to scan auth.users (estimated 8.00 against 8.17 for the index), and
--   the JSON was parsed again for every row: 0.6 ms a call, twice a turn. The user id is
--   now parsed once into a variable.
-- * is_my_message (the insert policy's check of a reply's reply_to) was a SQL function
--   that cannot be inlined (SECURITY DEFINER), so it was planned again at every call:
--   0.4 ms a turn. As PL/pgSQL its plan is cached per session.

create or replace function avatar_chat.act_as(claims text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
  -- Parsed once: in the query below, the planner may prefer scanning a small auth.users,
  -- and the expression would then be parsed again for every row.
  sub uuid := (claims::jsonb ->> 'sub')::uuid;
begin
  if not exists (select from auth.users u where u.id = sub) then
    raise exception 'The user of this token no longer exists.'
      using errcode = 'AC401', hint = 'user_not_found';
  end if;
  perform set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);
end
$$;


create or replace function avatar_chat.is_my_message(p_message_id uuid, p_conversation_id uuid)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  -- PL/pgSQL, not SQL: a SQL function that cannot be inlined (SECURITY DEFINER) is planned
  -- again at every call, and this one is called for every reply a user inserts.
  return exists (
    select from public.messages m
     where m.id = p_message_id and m.conversation_id = p_conversation_id and m.user_id = (select auth.uid())
  );
end
$$;
