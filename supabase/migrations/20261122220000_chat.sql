-- Conversations and messages. Messages are rows (never a JSON array), numbered by a
-- per-conversation `seq` that a trigger allocates under the conversation's row lock:
-- concurrent sends to one conversation queue in Postgres and get unique, gap-free
-- numbers whoever inserts (this API, the Data API, the dashboard); different
-- conversations never wait for each other.

create type public.conversation_mode as enum ('assistant', 'companion');
comment on type public.conversation_mode is 'assistant: concise and task-focused; companion: warm and conversational.';
create type public.message_role as enum ('user', 'assistant');
create type public.message_status as enum ('streaming', 'complete', 'failed', 'interrupted');
comment on type public.message_status is
  'streaming: being generated; complete; failed: the provider failed (see error_code); interrupted: cut off (shutdown or crash).';

create table public.conversations (
  id uuid not null default gen_random_uuid(),
  user_id uuid not null default auth.uid(),
  title text,
  mode public.conversation_mode not null default 'assistant',
  last_seq bigint not null default 0,
  revision bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint conversations_pkey primary key (id),
  constraint conversations_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint conversations_title_length check (char_length(title) between 1 and 200),
  constraint conversations_last_seq_nonnegative check (last_seq >= 0)
);

comment on table public.conversations is 'A chat between a user and their avatar.';
comment on column public.conversations.mode is 'assistant or companion; a change applies to the next turn.';
comment on column public.conversations.title is 'Short title, set after the first exchange unless the user named it.';
comment on column public.conversations.last_seq is 'Highest message seq allocated; kept by trigger. Do not set by hand.';
comment on column public.conversations.revision is 'Bumped when messages are edited or deleted after the fact; kept by trigger.';

create index conversations_user_id_updated_at_idx on public.conversations (user_id, updated_at desc, id desc);

create table public.messages (
  id uuid not null default gen_random_uuid(),
  conversation_id uuid not null,
  user_id uuid not null default auth.uid(),
  seq bigint not null default 0,
  role public.message_role not null default 'user',
  content text not null,
  status public.message_status not null default 'complete',
  reply_to uuid,
  persona_version bigint,
  personality public.personality_type,
  idempotency_key text,
  error_code text,
  attempt integer not null default 1,
  lease_expires_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint messages_pkey primary key (id),
  constraint messages_conversation_id_fkey foreign key (conversation_id)
    references public.conversations (id) on delete cascade,
  constraint messages_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint messages_reply_to_fkey foreign key (reply_to) references public.messages (id) on delete cascade,
  constraint messages_conversation_id_seq_key unique (conversation_id, seq),
  constraint messages_content_length check (char_length(content) <= 32000),
  constraint messages_idempotency_key_length check (char_length(idempotency_key) between 1 and 200),
  constraint messages_error_code_length check (char_length(error_code) <= 100),
  constraint messages_seq_positive check (seq > 0)
);

comment on table public.messages is 'Chat messages, one row each, numbered by seq within their conversation.';
comment on column public.messages.seq is 'Position in the conversation (1, 2, 3 ...), gap-free; allocated by trigger.';
comment on column public.messages.status is 'streaming, complete, failed (see error_code) or interrupted.';
comment on column public.messages.reply_to is 'For an assistant message: the user message it answers.';
comment on column public.messages.persona_version is 'Avatar version the reply was generated with.';
comment on column public.messages.personality is 'Avatar personality the reply was generated with.';
comment on column public.messages.idempotency_key is 'Client Idempotency-Key of the send; unique per conversation.';
comment on column public.messages.lease_expires_at is 'While streaming: after this the generating worker is presumed gone.';

create unique index messages_conversation_id_idempotency_key_key
  on public.messages (conversation_id, idempotency_key) where idempotency_key is not null;
create index messages_user_id_idx on public.messages (user_id);
create index messages_reply_to_idx on public.messages (reply_to) where reply_to is not null;
create index messages_user_id_streaming_idx on public.messages (user_id) where status = 'streaming';

-- Allocates seq under the conversation's row lock. SECURITY DEFINER because the API
-- roles may not write last_seq themselves; it only touches the conversation the new
-- row names, and RLS on messages still decides whether that insert is allowed at all
-- (a refused insert rolls this back with it).
create function avatar_chat.messages_assign_seq() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.conversations
     set last_seq = last_seq + 1, updated_at = now()
   where id = new.conversation_id
  returning last_seq into new.seq;
  if new.seq is null then
    raise foreign_key_violation using
      message = 'conversation does not exist', constraint = 'messages_conversation_id_fkey';
  end if;
  new.created_at := now();
  new.updated_at := now();
  return new;
end
$$;

create trigger messages_assign_seq
before insert on public.messages
for each row execute function avatar_chat.messages_assign_seq();

-- Position and owner are fixed once allocated, whoever edits the row.
create function avatar_chat.messages_guard() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.seq := old.seq;
  new.conversation_id := old.conversation_id;
  new.user_id := old.user_id;
  new.created_at := old.created_at;
  new.updated_at := now();
  return new;
end
$$;

create trigger messages_guard
before update on public.messages
for each row execute function avatar_chat.messages_guard();

-- Edits and deletions made after the fact (dashboard, Data API) change what a cached
-- conversation window holds: bump the conversation's revision so every worker's cache
-- sees the mismatch on the next turn. Settling a streaming reply is not such an edit.
-- AFTER triggers: a cascade from a deleted conversation or user finds nothing to bump.
create function avatar_chat.messages_touch_revision() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.conversations set revision = revision + 1 where id = old.conversation_id;
  return null;
end
$$;

create trigger messages_touch_revision_on_update
after update on public.messages
for each row when (old.status <> 'streaming')
execute function avatar_chat.messages_touch_revision();

create trigger messages_touch_revision_on_delete
after delete on public.messages
for each row execute function avatar_chat.messages_touch_revision();

create function avatar_chat.conversations_stamp() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  new.created_at := old.created_at;
  return new;
end
$$;

create trigger conversations_stamp
before update on public.conversations
for each row execute function avatar_chat.conversations_stamp();

-- Workers drop a deleted conversation's cached window at once; mode and revision
-- changes are caught by the version check every turn does anyway.
create function avatar_chat.conversations_notify() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_notify(
    'avatar_chat',
    json_build_object('table', 'conversations', 'op', 'delete', 'id', old.id, 'user_id', old.user_id)::text
  );
  return null;
end
$$;

create trigger conversations_notify
after delete on public.conversations
for each row execute function avatar_chat.conversations_notify();

alter table public.conversations enable row level security;
alter table public.messages enable row level security;

create policy conversations_select_own on public.conversations
  for select to authenticated using ((select auth.uid()) = user_id);
create policy conversations_insert_own on public.conversations
  for insert to authenticated with check ((select auth.uid()) = user_id);
create policy conversations_update_own on public.conversations
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
create policy conversations_delete_own on public.conversations
  for delete to authenticated using ((select auth.uid()) = user_id);

create policy messages_select_own on public.messages
  for select to authenticated using ((select auth.uid()) = user_id);
create policy messages_insert_own on public.messages
  for insert to authenticated with check (
    (select auth.uid()) = user_id
    and exists (
      select from public.conversations c
       where c.id = conversation_id and c.user_id = (select auth.uid())
    )
  );
create policy messages_update_own on public.messages
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
create policy messages_delete_own on public.messages
  for delete to authenticated using ((select auth.uid()) = user_id);

revoke all on public.conversations, public.messages from public, anon, authenticated;
grant select, delete on public.conversations to authenticated;
grant insert (user_id, title, mode) on public.conversations to authenticated;
grant update (title, mode) on public.conversations to authenticated;
grant select, delete on public.messages to authenticated;
grant insert (conversation_id, user_id, role, content, status, reply_to, persona_version, personality,
              idempotency_key, error_code, lease_expires_at)
  on public.messages to authenticated;
grant update (content, status, persona_version, personality, error_code, attempt, lease_expires_at)
  on public.messages to authenticated;
grant all on public.conversations, public.messages to service_role;

-- Clients may subscribe to their own new messages with Supabase Realtime (RLS applies).
-- Realtime must not block a deploy: where the publication is missing or belongs to another
-- role (both happen on real projects), say what to do by hand and go on.
do $$
begin
  alter publication supabase_realtime add table public.messages;
exception
  when duplicate_object then
    raise notice 'public.messages is already in publication supabase_realtime';
  when object_not_in_prerequisite_state then  -- a FOR ALL TABLES publication streams it already
    raise notice 'public.messages not added to publication supabase_realtime: %', sqlerrm;
  when undefined_object then
    raise notice 'publication supabase_realtime does not exist, so Supabase Realtime does not stream public.messages; '
      'turn on Realtime for the table in the dashboard (Database > Publications), or create the publication and run: '
      'alter publication supabase_realtime add table public.messages;';
  when insufficient_privilege then
    raise notice 'not the owner of publication supabase_realtime (%), so Supabase Realtime does not stream '
      'public.messages; turn on Realtime for the table in the dashboard (Database > Publications), or run as its '
      'owner: alter publication supabase_realtime add table public.messages;', sqlerrm;
end
$$;

-- The two writes of a chat turn, each one round trip: the functions take the caller's
-- role and claims themselves (as the Data API does), so RLS applies to every statement.

-- begin_turn: lock the conversation (sends to it queue here), then either
--   new         insert the user's message and a streaming placeholder for the reply;
--   replay      the Idempotency-Key was seen and its reply is complete: return both;
--   in_progress the reply for that key is still being generated (lease not expired);
--   retry       the reply for that key failed or was cut off: take it over again.
-- Returns what the turn needs to validate its cached state: the avatar's current
-- version, the conversation's mode and revision, and the seq before this message.
-- Errors: AC404 no such conversation (or not yours), AC409 no avatar yet,
-- AC422 Idempotency-Key reused with different content.
create function avatar_chat.begin_turn(
  claims text,
  p_conversation_id uuid,
  p_content text,
  p_idempotency_key text,
  p_lease_s double precision
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
      if rp.status = 'streaming' and rp.lease_expires_at > now() then
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
      insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at)
      values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s))
      returning * into rp;
    else
      update public.messages m
         set status = 'streaming', content = '', error_code = null, attempt = m.attempt + 1,
             lease_expires_at = now() + make_interval(secs => p_lease_s)
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
  insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at)
  values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s))
  returning * into rp;
  return query select 'new', conv.mode, conv.revision, conv.title, conv.last_seq,
                      av_id, av_version, um, rp;
end
$$;

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
  perform set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);
  return query
    update public.messages m
       set content = p_content, status = p_status, error_code = p_error_code,
           persona_version = p_persona_version, personality = p_personality, lease_expires_at = null
     where m.id = p_reply_id and m.attempt = p_attempt and m.status = 'streaming'
    returning m.*;
end
$$;

revoke all on function avatar_chat.begin_turn(text, uuid, text, text, double precision) from public, anon, authenticated;
revoke all on function avatar_chat.finish_turn(text, uuid, integer, text, public.message_status, text, bigint, public.personality_type)
  from public, anon, authenticated;
