-- Conversation memory: long conversations outgrow the window. After a turn has committed
-- (G4), a background job summarises the older messages into one row per conversation;
-- the summary records the conversation's revision it was made at and the last seq it
-- covers, and a turn uses it only while that revision is still the conversation's (no
-- message edited, deleted or regenerated since), with the recent window after it. The
-- job writes its summary in one statement at the end, guarded by that revision: a worker
-- that dies while summarising leaves nothing, and a stale summary is never written.

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

-- save_summary: store a summary made at p_revision, if that is still the conversation's
-- revision and it covers more than the one stored (or the stored one is older). One
-- statement: all of it or nothing. True when it was stored.
create function avatar_chat.save_summary(
  claims text, p_conversation_id uuid, p_covers_upto_seq bigint, p_revision bigint, p_content text
)
returns boolean
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  stored boolean;
begin
  perform avatar_chat.act_as(claims);
  insert into public.conversation_summaries as s (conversation_id, covers_upto_seq, revision, content)
  select c.id, p_covers_upto_seq, p_revision, p_content
    from public.conversations c
   where c.id = p_conversation_id and c.revision = p_revision
  on conflict (conversation_id) do update
    set covers_upto_seq = excluded.covers_upto_seq, revision = excluded.revision,
        content = excluded.content, updated_at = now()
    where (s.revision, s.covers_upto_seq) < (excluded.revision, excluded.covers_upto_seq)
  returning true into stored;
  return coalesce(stored, false);
end
$$;

revoke all on function avatar_chat.save_summary(text, uuid, bigint, bigint, text) from public, anon, authenticated;

drop function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer
);

-- As before, plus the summary: p_known_summary_seq is the one the worker has with its
-- window (at p_known_window_revision); the valid summary comes back when it differs.
create function avatar_chat.begin_turn(
  claims text,
  p_conversation_id uuid,
  p_content text,
  p_idempotency_key text,
  p_lease_s double precision,
  p_worker_id bigint,
  p_known_avatar_id uuid,
  p_known_avatar_version bigint,
  p_known_window_seq bigint,
  p_known_window_revision bigint,
  p_window_limit integer,
  p_known_summary_seq bigint
)
returns table (
  outcome text,
  mode text,
  revision bigint,
  title_unset boolean,
  prev_seq bigint,
  avatar_id uuid,
  avatar_version bigint,
  persona_name text,
  persona_personality text,
  persona_backstory text,
  window_seqs bigint[],
  window_roles text[],
  window_contents text[],
  window_statuses text[],
  summary_seq bigint,
  summary_content text,
  user_message_id uuid,
  user_seq bigint,
  user_created_at timestamptz,
  reply_id uuid,
  reply_seq bigint,
  reply_attempt integer,
  reply_created_at timestamptz,
  reply_variant integer,
  reply_content text,
  reply_persona_version bigint,
  reply_personality text
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
  av public.avatars;
  live_workers bigint[];
  upto bigint;
  w_seqs bigint[];
  w_roles text[];
  w_contents text[];
  w_statuses text[];
  is_new boolean;
  s_seq bigint;
  s_content text;
begin
  if p_idempotency_key is not null then
    -- Read before acting as the user: the API roles cannot see avatar_chat.workers.
    live_workers := array(select w.id from avatar_chat.workers w where w.expires_at > now());
  end if;
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
      -- The reply a retry is about: the current one (a regenerated send has several).
      select * into rp from public.messages m where m.reply_to = um.id and m.is_current;
      if rp.status = 'complete' then
        return query select 'replay', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            rp.content, rp.persona_version, rp.personality::text;
        return;
      end if;
      -- Still being generated: the lease runs and its worker is alive.
      if rp.status = 'streaming' and rp.lease_expires_at > now()
         and (rp.worker_id is null or rp.worker_id = any (live_workers)) then
        return query select 'in_progress', conv.mode::text, conv.revision, conv.title is null, um.seq - 1,
                            null::uuid, null::bigint, null::text, null::text, null::text,
                            null::bigint[], null::text[], null::text[], null::text[], null::bigint, null::text,
                            um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                            null::text, null::bigint, null::text;
        return;
      end if;
    end if;
  end if;

  select * into av from public.avatars a where a.user_id = (select auth.uid());
  if not found then
    raise exception 'Create your avatar first (POST /avatars/me).'
      using errcode = 'AC409', hint = 'avatar_required';
  end if;

  is_new := um.id is null;
  if not is_new then
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
    upto := um.seq - 1;
  else
    insert into public.messages (conversation_id, role, content, status, idempotency_key)
    values (conv.id, 'user', p_content, 'complete', p_idempotency_key)
    returning * into um;
    insert into public.messages (conversation_id, role, content, status, reply_to, lease_expires_at, worker_id)
    values (conv.id, 'assistant', '', 'streaming', um.id, now() + make_interval(secs => p_lease_s), p_worker_id)
    returning * into rp;
    upto := conv.last_seq;
  end if;

  -- The window, unless the worker's cached one ends exactly here (a retry never uses one).
  if p_window_limit > 0 and (
    not is_new or (p_known_window_seq, p_known_window_revision) is distinct from (upto, conv.revision)
  ) then
    select coalesce(array_agg(w.seq order by w.seq), '{}'), coalesce(array_agg(w.role::text order by w.seq), '{}'),
           coalesce(array_agg(w.content order by w.seq), '{}'), coalesce(array_agg(w.status::text order by w.seq), '{}')
      into w_seqs, w_roles, w_contents, w_statuses
      from (select m.seq, m.role, m.content, m.status from public.messages m
             where m.conversation_id = conv.id and m.seq <= upto and m.is_current
             order by m.seq desc limit p_window_limit) w;
  end if;

  -- The conversation's summary, if it was made at this very revision (no message edited,
  -- deleted or regenerated since): sent unless the worker has it with its window.
  select s.covers_upto_seq, s.content into s_seq, s_content
    from public.conversation_summaries s
   where s.conversation_id = conv.id and s.revision = conv.revision and s.covers_upto_seq <= upto;
  if (s_seq, conv.revision) is not distinct from (p_known_summary_seq, p_known_window_revision) then
    s_content := null;
  end if;

  return query select case when is_new then 'new' else 'retry' end,
                      conv.mode::text, conv.revision, conv.title is null, upto,
                      av.id, av.version,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.name end,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.personality::text end,
                      case when (av.id, av.version) is distinct from (p_known_avatar_id, p_known_avatar_version)
                           then av.backstory end,
                      w_seqs, w_roles, w_contents, w_statuses, s_seq, s_content,
                      um.id, um.seq, um.created_at, rp.id, rp.seq, rp.attempt, rp.created_at, rp.variant,
                      null::text, null::bigint, null::text;
end
$$;

revoke all on function avatar_chat.begin_turn(
  text, uuid, text, text, double precision, bigint, uuid, bigint, bigint, bigint, integer, bigint
) from public, anon, authenticated;
