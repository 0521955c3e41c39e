-- Declarative schema: the live definition of the private `avatar_chat` schema and
-- avatar_chat.act_as, the one way its functions act as the user.
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration
-- (`supabase db diff -f <name>` drafts one; comments, column grants and publication
-- membership it does not see, so write those by hand). tests/core/test_schema_files.py
-- fails while the two disagree. Files apply in the order of [db.migrations] schema_paths
-- in supabase/config.toml.

-- Private schema for this backend's functions. It is not exposed by the Data API, and
-- the API roles cannot use it: its functions switch role and claims themselves.
create schema if not exists avatar_chat;
revoke all on schema avatar_chat from public;
comment on schema avatar_chat is 'Avatar chat backend internals; not exposed through the Data API.';

-- act_as: the role and claims Supabase's Data API sets for a request, transaction-local.
-- Every avatar_chat function that works on a user's behalf calls it first, and so does
-- the API's per-request transaction opener, so the same RLS policies apply everywhere.
--
-- Errors the client can act on are raised as SQLSTATE 'AC' || <HTTP status>, with the
-- human message as MESSAGE, the stable machine-readable code as HINT and, where there
-- is more to say, a JSON object as DETAIL (`retry_after`: seconds, sent as Retry-After;
-- `etag`: the current entity tag, sent as ETag). The API translates every AC<status> in
-- one place (avatar_chat.core.db_errors); no message is ever built from Postgres text.
--
-- A deleted user's access token still verifies until it expires: act_as refuses it
-- (AC401 user_not_found), so their requests fail at once on every worker, checked as the
-- connecting role before switching (the API roles cannot read auth.users).
create function avatar_chat.act_as(claims text)
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
comment on function avatar_chat.act_as(text) is
  'Act as the user of these JWT claims until the transaction ends, as the Data API does.';
revoke all on function avatar_chat.act_as(text) from public, anon, authenticated;
