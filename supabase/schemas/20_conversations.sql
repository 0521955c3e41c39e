-- Declarative schema: the live definition of conversations and messages, their
-- triggers, policies, grants and Realtime publication membership.
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration
-- (`supabase db diff -f <name>` drafts one; comments, column grants and publication
-- membership it does not see, so write those by hand). tests/core/test_schema_files.py
-- fails while the two disagree.
--
-- Messages are rows (never a JSON array), numbered by a per-conversation `seq` that a
-- trigger allocates under the conversation's row lock: concurrent sends to one
-- conversation queue in Postgres and get unique, gap-free numbers whoever inserts (this
-- API, the Data API, the dashboard); different conversations never wait for each other.

create type public.conversation_mode as enum ('assistant', 'companion');
comment on type public.conversation_mode is 'assistant: concise and task-focused; companion: warm and conversational.';
create type public.message_role as enum ('user', 'assistant', 'notice');
comment on type public.message_role is
  'user; assistant: the avatar''s reply; notice: a safety notice the operator wrote (see notice_kind), never sent to the model.';
create type public.message_status as enum (
  'streaming', 'complete', 'failed', 'interrupted', 'stopped', 'filtered', 'blocked'
);
comment on type public.message_status is
  'streaming: being generated; complete; failed: the provider failed (see error_code); interrupted: cut off (shutdown or crash); stopped: stopped on request, with the text so far; filtered: a reply moderation stopped, its content replaced by the operator''s text; blocked: a user message moderation refused, never sent to the model.';
create type public.notice_kind as enum ('disclosure', 'break', 'crisis');
comment on type public.notice_kind is
  'disclosure: you are chatting with an AI; break: a reminder to take a break (minors); crisis: crisis services (docs/safety.md).';

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

-- worker_id is listed with the other streaming columns here; in a database built by the
-- migrations it is the last column (added by 20261122233000_reply_workers). Nothing
-- depends on column positions: every reader names its columns.
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
  worker_id bigint,
  variant integer not null default 0,
  is_current boolean not null default true,
  stop_requested boolean not null default false,
  followed_at timestamptz,
  notice_kind public.notice_kind,
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
  constraint messages_seq_positive check (seq > 0),
  constraint messages_variant_nonnegative check (variant >= 0),
  constraint messages_notice_kind check ((role = 'notice') = (notice_kind is not null))
);

comment on table public.messages is 'Chat messages, one row each, numbered by seq within their conversation.';
comment on column public.messages.seq is 'Position in the conversation (1, 2, 3 ...), gap-free; allocated by trigger.';
comment on column public.messages.status is 'streaming, complete, failed (see error_code) or interrupted.';
comment on column public.messages.reply_to is 'For an assistant message: the user message it answers.';
comment on column public.messages.persona_version is 'Avatar version the reply was generated with.';
comment on column public.messages.personality is 'Avatar personality the reply was generated with.';
comment on column public.messages.idempotency_key is 'Client Idempotency-Key of the send; unique per conversation.';
comment on column public.messages.lease_expires_at is 'While streaming: after this the generating worker is presumed gone.';
comment on column public.messages.worker_id is
  'While streaming: the API worker generating the reply (alive while its avatar_chat.workers row is).';
comment on column public.messages.variant is
  'For an assistant message: which alternative reply to its user message (0 first, then regenerations).';
comment on column public.messages.is_current is
  'Whether this message is shown and sent to the model: one current alternative per user message.';
comment on column public.messages.stop_requested is
  'While streaming: a client asked to stop; the generating worker saves the text so far as stopped.';
comment on column public.messages.followed_at is
  'While streaming: when a client first followed the reply; its worker saves the text as it grows from then on.';
comment on column public.messages.notice_kind is
  'For a notice (role notice), which one. Written by the chat turn; what counts (safety events, the report) is not derived from these rows.';

create unique index messages_conversation_id_idempotency_key_key
  on public.messages (conversation_id, idempotency_key) where idempotency_key is not null;
-- Led by user_id (the RLS condition) and ending in seq: a page or a window of one
-- conversation stops after its own rows whatever plan a repeated statement gets.
create index messages_user_id_conversation_id_seq_idx on public.messages (user_id, conversation_id, seq);
create index messages_reply_to_idx on public.messages (reply_to) where reply_to is not null;
-- One current alternative per user message (regenerate and edit add alternatives).
create unique index messages_reply_to_current_key on public.messages (reply_to)
  where is_current and reply_to is not null;
create index messages_user_id_streaming_idx on public.messages (user_id) where status = 'streaming';
-- The replies a worker generates that someone follows or asked to stop
-- (avatar_chat.worker_replies): only those rows are in it, so the others' writes skip it.
create index messages_worker_id_demand_idx on public.messages (worker_id)
  where status = 'streaming' and (stop_requested or followed_at is not null);

-- Allocates seq under the conversation's row lock. SECURITY DEFINER because the API
-- roles may not write last_seq themselves. Where a user acts (auth.uid() set: this API,
-- the Data API) it numbers only their own row in their own conversation. Any other row
-- is left unnumbered, so nobody else's conversation is locked or bumped. That row is
-- refused by messages_insert_own, with the same RLS error whether the conversation is
-- someone else's or does not exist; should RLS ever pass it, its null seq fails
-- not-null. A valid user token always names its user; auth.uid() is null only where RLS
-- does not apply (the dashboard, service_role), and there a missing conversation is a
-- foreign key error.
create function avatar_chat.messages_assign_seq() returns trigger
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
  -- An import (avatar_chat.begin_import; no API role can mark a transaction so) keeps the
  -- archive's times.
  if current_setting('avatar_chat.importing', true) is distinct from 'on' or new.created_at is null then
    new.created_at := now();
    new.updated_at := now();
  end if;
  return new;
end
$$;

-- Fires before messages_enforce_limits (40_limits.sql): BEFORE triggers run in name order.
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
  -- An import (avatar_chat.begin_import) sets the archive's last activity itself.
  if current_setting('avatar_chat.importing', true) is distinct from 'on' then
    new.updated_at := now();
  end if;
  new.created_at := old.created_at;
  return new;
end
$$;

create trigger conversations_stamp
before update on public.conversations
for each row execute function avatar_chat.conversations_stamp();

-- is_my_message: whether a message is the caller's and in this conversation, for
-- messages_insert_own. A policy on public.messages cannot read public.messages itself
-- (Postgres reports infinite recursion), so this reads it as its owner and checks the
-- owner by hand. It tells the caller only about their own messages. EXECUTE is for the
-- policy: the API roles have no USAGE on avatar_chat, so they cannot call it by name.
create function avatar_chat.is_my_message(p_message_id uuid, p_conversation_id uuid)
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
comment on function avatar_chat.is_my_message(uuid, uuid) is
  'Whether the message is the caller''s and in this conversation (for messages_insert_own).';
revoke all on function avatar_chat.is_my_message(uuid, uuid) from public, anon, authenticated;
grant execute on function avatar_chat.is_my_message(uuid, uuid) to authenticated;

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
-- A reply only to a message of the caller's own in the same conversation: a row never
-- names another user's message (nor finds out, by a unique index or a foreign key, that
-- it exists). RLS WITH CHECK runs before constraints and index insertion.
create policy messages_insert_own on public.messages
  for insert to authenticated with check (
    (select auth.uid()) = user_id
    and exists (
      select from public.conversations c
       where c.id = conversation_id and c.user_id = (select auth.uid())
    )
    and (reply_to is null or avatar_chat.is_my_message(reply_to, conversation_id))
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
              idempotency_key, error_code, lease_expires_at, worker_id, variant, is_current, stop_requested,
              notice_kind)
  on public.messages to authenticated;
grant update (content, status, persona_version, personality, error_code, attempt, lease_expires_at, worker_id,
              is_current, stop_requested, followed_at)
  on public.messages to authenticated;
grant all on public.conversations, public.messages to service_role;

-- Clients may subscribe to their own messages and conversations with Supabase Realtime
-- (RLS applies). The migrations add them tolerantly (a NOTICE, not a failure, where the
-- publication is missing or belongs to another role).
alter publication supabase_realtime add table public.messages, public.conversations;

-- Conversation memory (see 30_chat_turns.sql: save_summary, begin_turn).
create table public.conversation_summaries (
  conversation_id uuid not null,
  user_id uuid not null default auth.uid(),
  covers_upto_seq bigint not null,
  revision bigint not null,
  content text not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint conversation_summaries_pkey primary key (conversation_id),
  constraint conversation_summaries_conversation_id_fkey foreign key (conversation_id)
    references public.conversations (id) on delete cascade,
  constraint conversation_summaries_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint conversation_summaries_covers_upto_seq_positive check (covers_upto_seq > 0),
  constraint conversation_summaries_content_length check (char_length(content) <= 16000)
);
comment on table public.conversation_summaries is
  'What a conversation said before its recent window, summarised; valid while its revision is the conversation''s.';
comment on column public.conversation_summaries.covers_upto_seq is 'The summary covers the current messages up to this seq.';
comment on column public.conversation_summaries.revision is
  'The conversation''s revision when the summary was made; any later edit or delete makes it stale.';
create index conversation_summaries_user_id_idx on public.conversation_summaries (user_id);

alter table public.conversation_summaries enable row level security;
create policy conversation_summaries_select_own on public.conversation_summaries
  for select to authenticated using ((select auth.uid()) = user_id);
create policy conversation_summaries_insert_own on public.conversation_summaries
  for insert to authenticated with check (
    (select auth.uid()) = user_id
    and exists (
      select from public.conversations c
       where c.id = conversation_id and c.user_id = (select auth.uid())
    )
  );
create policy conversation_summaries_update_own on public.conversation_summaries
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
create policy conversation_summaries_delete_own on public.conversation_summaries
  for delete to authenticated using ((select auth.uid()) = user_id);

revoke all on public.conversation_summaries from public, anon, authenticated;
grant select, delete on public.conversation_summaries to authenticated;
grant insert (conversation_id, user_id, covers_upto_seq, revision, content)
  on public.conversation_summaries to authenticated;
grant update (covers_upto_seq, revision, content, updated_at) on public.conversation_summaries to authenticated;
grant all on public.conversation_summaries to service_role;
