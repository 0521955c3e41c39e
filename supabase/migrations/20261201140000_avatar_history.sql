-- Persona history and undo.
--
-- Every version of every avatar is kept in public.avatar_history, written by an AFTER
-- trigger on public.avatars, so every writer is recorded: this API, the Data API, the
-- Supabase dashboard, any SQL client. Its `version` is the avatar's own, the number that
-- assistant messages record as `persona_version`, so a client can show which persona
-- said what. Users read their own rows (RLS); nobody but the trigger (and service_role)
-- writes them. avatar_chat.restore_my_avatar makes a new version with an old persona.

create table public.avatar_history (
  avatar_id uuid not null,
  user_id uuid not null,
  version bigint not null,
  name text not null,
  personality public.personality_type not null,
  backstory text not null,
  changed_at timestamptz not null default now(),
  constraint avatar_history_pkey primary key (avatar_id, version),
  constraint avatar_history_user_id_version_key unique (user_id, version),
  constraint avatar_history_avatar_id_fkey foreign key (avatar_id) references public.avatars (id) on delete cascade,
  constraint avatar_history_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint avatar_history_version_positive check (version > 0)
);

comment on table public.avatar_history is
  'Every version of each avatar, one row per version, recorded by trigger whoever wrote it. Read-only for users.';
comment on column public.avatar_history.avatar_id is 'The avatar (public.avatars.id); its history goes with it.';
comment on column public.avatar_history.user_id is 'Owner (auth.users.id), the avatar''s; follows it if the avatar changes hands.';
comment on column public.avatar_history.version is 'The avatar''s version, as in public.avatars.version and messages.persona_version.';
comment on column public.avatar_history.name is 'Display name at this version.';
comment on column public.avatar_history.personality is 'Persona at this version.';
comment on column public.avatar_history.backstory is 'Backstory at this version.';
comment on column public.avatar_history.changed_at is 'When this version was written (the avatar''s updated_at).';

-- SECURITY DEFINER: the API roles cannot write history themselves. The row it records is
-- the one just written, so what the writer was allowed to do decides what is recorded.
create function avatar_chat.avatars_record_history() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' and new.user_id is distinct from old.user_id then
    -- An operator gave the avatar to another user: its history goes along (RLS reads it by owner).
    update public.avatar_history h set user_id = new.user_id where h.avatar_id = new.id;
  end if;
  insert into public.avatar_history (avatar_id, user_id, version, name, personality, backstory, changed_at)
  values (new.id, new.user_id, new.version, new.name, new.personality, new.backstory, new.updated_at);
  return null;
end
$$;

create trigger avatars_record_history
after insert or update on public.avatars
for each row execute function avatar_chat.avatars_record_history();

-- What exists already: each avatar's current version (earlier ones were never kept).
insert into public.avatar_history (avatar_id, user_id, version, name, personality, backstory, changed_at)
select a.id, a.user_id, a.version, a.name, a.personality, a.backstory, a.updated_at
  from public.avatars a;

alter table public.avatar_history enable row level security;

create policy avatar_history_select_own on public.avatar_history
  for select to authenticated using ((select auth.uid()) = user_id);

revoke all on public.avatar_history from public, anon, authenticated;
grant select on public.avatar_history to authenticated;
grant all on public.avatar_history to service_role;

-- One round trip for an undo: take the caller's role and claims, copy the persona of one
-- of their history rows (read under RLS) onto their avatar, answer with the committed
-- row. The update goes through avatars_stamp and avatars_record_history like any other:
-- it is a new version. `if_match` as in update_my_avatar (null: no precondition). Returns
-- no row when the caller has no avatar; raises AC412 (hint precondition_failed, DETAIL
-- {"etag": ...}) when the precondition fails, else AC404 (hint avatar_version_not_found)
-- when the version is not in the caller's history.
create function avatar_chat.restore_my_avatar(claims text, p_version bigint, if_match bigint[])
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
       set name = h.name, personality = h.personality, backstory = h.backstory
      from public.avatar_history h
     where a.user_id = (select auth.uid())
       and h.avatar_id = a.id and h.version = p_version
       and (if_match is null or a.version = any (if_match))
    returning a.*;
  if found then
    return;
  end if;

  select a.version into current_version from public.avatars a where a.user_id = (select auth.uid());
  if not found then
    return;
  end if;
  if if_match is not null and not (current_version = any (if_match)) then
    raise exception 'If-Match does not match the avatar''s current version (%).', current_version
      using errcode = 'AC412', hint = 'precondition_failed',
            detail = json_build_object('etag', format('"%s"', current_version))::text;
  end if;
  raise exception 'Your avatar has no version %.', p_version
    using errcode = 'AC404', hint = 'avatar_version_not_found';
end
$$;

comment on function avatar_chat.restore_my_avatar(text, bigint, bigint[]) is
  'Make a new version of the caller''s avatar with the persona of one of its earlier versions.';
revoke all on function avatar_chat.restore_my_avatar(text, bigint, bigint[]) from public, anon, authenticated;
