-- Declarative schema: the live definition of avatars (one per user, with a persona that
-- can be switched live), their history, their triggers, policies and grants, and
-- update_my_avatar and restore_my_avatar.
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration
-- (`supabase db diff -f <name>` drafts one; comments, column grants and publication
-- membership it does not see, so write those by hand). tests/core/test_schema_files.py
-- fails while the two disagree.
--
-- `version` is bumped by a trigger on every update, whoever makes it (this API, the
-- Supabase dashboard, any SQL client). Nothing is announced (no NOTIFY on any write
-- path): every chat turn compares the version begin_turn returns with what it cached.
--
-- Every version of every avatar is kept in avatar_history by an AFTER trigger, whoever
-- wrote it; its `version` is the avatar's, the number assistant messages record as
-- `persona_version`. Users read their own rows; only the trigger (and service_role)
-- writes them.
--
-- `card` keeps what a character card (POST /avatars/me/card) holds beyond the persona, so
-- that GET /avatars/me/card gives it back whole; it is not versioned (see
-- avatars_record_history) and bounded by a trigger that runs only when it is written.

create type public.personality_type as enum ('friendly', 'professional', 'playful', 'caring', 'witty');
comment on type public.personality_type is 'How the avatar talks; the API''s PersonalityType values.';

create table public.avatars (
  id uuid not null default gen_random_uuid(),
  user_id uuid not null default auth.uid(),
  name text not null,
  personality public.personality_type not null default 'friendly',
  backstory text not null default '',
  version bigint not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  image_path text,
  card jsonb,
  constraint avatars_pkey primary key (id),
  constraint avatars_user_id_key unique (user_id),
  constraint avatars_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint avatars_name_length check (char_length(btrim(name)) between 1 and 80 and char_length(name) <= 80),
  constraint avatars_backstory_length check (char_length(backstory) <= 4000),
  constraint avatars_version_positive check (version > 0),
  -- Every object of a user lives under their own folder: what the Storage policy keys on.
  constraint avatars_image_path_own_folder check (
    image_path ~ '^[0-9a-f-]{36}/[0-9a-f]{32}$' and split_part(image_path, '/', 1) = user_id::text
  )
);

comment on table public.avatars is 'Each user''s AI avatar and its persona. Edits here take effect on the next chat turn.';
comment on column public.avatars.user_id is 'Owner (auth.users.id); one avatar per user.';
comment on column public.avatars.name is 'Display name, 1-80 characters.';
comment on column public.avatars.personality is 'Persona: friendly, professional, playful, caring or witty.';
comment on column public.avatars.backstory is 'Free-text background given to the model, up to 4000 characters.';
comment on column public.avatars.version is 'Bumped by trigger on every update; the API''s ETag. Do not set by hand.';
comment on column public.avatars.updated_at is 'Kept by trigger.';
comment on column public.avatars.image_path is
  'Storage folder of the avatar''s image (<user_id>/<id>, holding 512.webp and 128.webp); null: none.';
comment on column public.avatars.card is
  'The character card the avatar was made from (POST /avatars/me/card): {spec, spec_version, data} without '
  'data.name (the name column); data.description and data.personality as the card had them. Not versioned, '
  'never given to the model. At most 2 MiB as JSON text, an object. Null: none.';

-- Insert and update keep version and timestamps honest whatever the writer sends.
create function avatar_chat.avatars_stamp() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    new.version := 1;
    new.created_at := now();
  else
    new.version := old.version + 1;
    new.created_at := old.created_at;
  end if;
  new.updated_at := now();
  return new;
end
$$;

create trigger avatars_stamp
before insert or update on public.avatars
for each row execute function avatar_chat.avatars_stamp();

-- The card is a JSON object of at most 2 MiB as text, whoever writes it (the API refuses a
-- card over 1 MiB of JSON before it gets here: Postgres' text of it can be half as long
-- again). A trigger on the column rather than a CHECK: a CHECK runs on every update of the
-- row, and reading a card of up to 2 MiB (TOASTed) would then weigh on every persona
-- switch; this runs only when the card itself is written.
create function avatar_chat.avatars_check_card() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.card is null then
    return new;
  end if;
  if jsonb_typeof(new.card) <> 'object' then
    raise exception 'A character card is a JSON object.'
      using errcode = 'AC422', hint = 'card_invalid';
  end if;
  if octet_length(new.card::text) > 2097152 then
    raise exception 'The character card is larger than 2 MiB.'
      using errcode = 'AC422', hint = 'card_too_large';
  end if;
  return new;
end
$$;

create trigger avatars_check_card
before insert or update of card on public.avatars
for each row execute function avatar_chat.avatars_check_card();

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
-- The card (avatars.card) is not recorded: a version is the persona a chat turn was
-- generated with (name, personality, backstory), and the card's other fields never reach
-- the model; a copy of up to 2 MiB in every version would be written again by every
-- persona switch. A card import is still a new version (its persona is recorded), and a
-- restore leaves the card as it is.
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

alter table public.avatars enable row level security;

create policy avatars_select_own on public.avatars
  for select to authenticated using ((select auth.uid()) = user_id);
create policy avatars_insert_own on public.avatars
  for insert to authenticated with check ((select auth.uid()) = user_id);
create policy avatars_update_own on public.avatars
  for update to authenticated
  using ((select auth.uid()) = user_id)
  with check ((select auth.uid()) = user_id);
create policy avatars_delete_own on public.avatars
  for delete to authenticated using ((select auth.uid()) = user_id);

revoke all on public.avatars from public, anon, authenticated;
grant select, delete on public.avatars to authenticated;
grant insert (user_id, name, personality, backstory, image_path, card) on public.avatars to authenticated;
grant update (name, personality, backstory, image_path, card) on public.avatars to authenticated;
grant all on public.avatars to service_role;

alter table public.avatar_history enable row level security;

create policy avatar_history_select_own on public.avatar_history
  for select to authenticated using ((select auth.uid()) = user_id);

revoke all on public.avatar_history from public, anon, authenticated;
grant select on public.avatar_history to authenticated;
grant all on public.avatar_history to service_role;

-- One round trip for an avatar update: take the caller's role and claims (as the Data
-- API does), apply the changes under RLS, answer with the committed row.
-- `changes` holds only the fields to change; `if_match` the acceptable versions
-- (null: no precondition). Returns no row when the caller has no avatar; raises AC412
-- (hint precondition_failed, DETAIL {"etag": ...} with the current version) when the
-- precondition fails.
create function avatar_chat.update_my_avatar(claims text, changes jsonb, if_match bigint[])
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
       set name = case when changes ? 'name' then changes ->> 'name' else a.name end,
           personality = case when changes ? 'personality'
                              then (changes ->> 'personality')::public.personality_type
                              else a.personality end,
           backstory = case when changes ? 'backstory' then changes ->> 'backstory' else a.backstory end
     where a.user_id = (select auth.uid())
       and (if_match is null or a.version = any (if_match))
    returning a.*;

  if not found and if_match is not null then
    select a.version into current_version from public.avatars a where a.user_id = (select auth.uid());
    if found then
      raise exception 'If-Match does not match the avatar''s current version (%).', current_version
        using errcode = 'AC412', hint = 'precondition_failed',
              detail = json_build_object('etag', format('"%s"', current_version))::text;
    end if;
  end if;
end
$$;

revoke all on function avatar_chat.update_my_avatar(text, jsonb, bigint[]) from public, anon, authenticated;

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

-- set_my_avatar_image: point the caller's avatar at a new image folder (or none), in one
-- round trip. Answers the row as committed plus the folder it pointed at before (for the
-- caller to remove once this committed); no row when the caller has no avatar. Setting
-- what is already set changes nothing (no new version). `if_match` as in update_my_avatar:
-- AC412 (hint precondition_failed, DETAIL {"etag": ...}) when the avatar is at another version.
create function avatar_chat.set_my_avatar_image(claims text, p_image_path text, if_match bigint[])
returns table (
  id uuid,
  user_id uuid,
  name text,
  personality public.personality_type,
  backstory text,
  version bigint,
  created_at timestamptz,
  updated_at timestamptz,
  image_path text,
  previous_image_path text
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
  cur public.avatars;
begin
  perform avatar_chat.act_as(claims);

  select a.* into cur from public.avatars a where a.user_id = (select auth.uid()) for update;
  if not found then
    return;
  end if;
  if if_match is not null and not (cur.version = any (if_match)) then
    raise exception 'If-Match does not match the avatar''s current version (%).', cur.version
      using errcode = 'AC412', hint = 'precondition_failed',
            detail = json_build_object('etag', format('"%s"', cur.version))::text;
  end if;
  if cur.image_path is not distinct from p_image_path then
    return query select cur.id, cur.user_id, cur.name, cur.personality, cur.backstory, cur.version,
                        cur.created_at, cur.updated_at, cur.image_path, null::text;
    return;
  end if;

  return query
    update public.avatars a set image_path = p_image_path
     where a.id = cur.id
    returning a.id, a.user_id, a.name, a.personality, a.backstory, a.version,
              a.created_at, a.updated_at, a.image_path, cur.image_path;
end
$$;

comment on function avatar_chat.set_my_avatar_image(text, text, bigint[]) is
  'Point the caller''s avatar at an image folder (or none); returns the row and the folder before.';
revoke all on function avatar_chat.set_my_avatar_image(text, text, bigint[]) from public, anon, authenticated;

-- begin_my_image_upload: what PUT /avatars/me/image checks before it decodes anything, in
-- one round trip: the user (AC401 as act_as), their avatar (no row: none), If-Match (AC412
-- as above), and one upload counted against the per-user rate (count_image_upload in
-- 40_limits.sql: AC429 image_rate_limited beyond it). Nothing is counted for an upload
-- refused here. SECURITY DEFINER, as the limits' trigger: it counts in a table no user may
-- touch. It changes nothing of the user's and reads only the row RLS would show them (the
-- avatar of the claims' user); the image is then written as the user, by
-- set_my_avatar_image, which decides.
create function avatar_chat.begin_my_image_upload(claims text, if_match bigint[])
returns setof public.avatars
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  sub uuid := (claims::jsonb ->> 'sub')::uuid;
  cur public.avatars;
begin
  if not exists (select from auth.users u where u.id = sub) then
    raise exception 'The user of this token no longer exists.'
      using errcode = 'AC401', hint = 'user_not_found';
  end if;
  select a.* into cur from public.avatars a where a.user_id = sub;
  if not found then
    return;
  end if;
  if if_match is not null and not (cur.version = any (if_match)) then
    raise exception 'If-Match does not match the avatar''s current version (%).', cur.version
      using errcode = 'AC412', hint = 'precondition_failed',
            detail = json_build_object('etag', format('"%s"', cur.version))::text;
  end if;
  perform avatar_chat.count_image_upload(sub);
  return next cur;
end
$$;

comment on function avatar_chat.begin_my_image_upload(text, bigint[]) is
  'Check an image upload before it is decoded: the caller''s avatar, If-Match, the upload rate.';
revoke all on function avatar_chat.begin_my_image_upload(text, bigint[]) from public, anon, authenticated;

-- begin_my_card_image: what POST /avatars/me/card checks before it decodes the image a card
-- brings, in one round trip, as begin_my_image_upload does for PUT /avatars/me/image: the
-- user (AC401), whether they have an avatar (answered: the API refuses a create when they
-- have one and an update when they have none), If-Match for an update (AC412), and, when the
-- write can go ahead, one upload counted against the per-user image rate (count_image_upload
-- in 40_limits.sql: AC429 image_rate_limited beyond it). SECURITY DEFINER for the count, as
-- begin_my_image_upload; it changes nothing of the user's and reads only their own avatar.
-- The card is then written as the user, by write_my_avatar_card, which decides.
create function avatar_chat.begin_my_card_image(claims text, p_replace boolean, if_match bigint[])
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  sub uuid := (claims::jsonb ->> 'sub')::uuid;
  current_version bigint;
  has_avatar boolean;
begin
  if not exists (select from auth.users u where u.id = sub) then
    raise exception 'The user of this token no longer exists.'
      using errcode = 'AC401', hint = 'user_not_found';
  end if;
  select a.version into current_version from public.avatars a where a.user_id = sub;
  has_avatar := found;
  if has_avatar is distinct from p_replace then
    return has_avatar;
  end if;
  if p_replace and if_match is not null and not (current_version = any (if_match)) then
    raise exception 'If-Match does not match the avatar''s current version (%).', current_version
      using errcode = 'AC412', hint = 'precondition_failed',
            detail = json_build_object('etag', format('"%s"', current_version))::text;
  end if;
  perform avatar_chat.count_image_upload(sub);
  return has_avatar;
end
$$;

comment on function avatar_chat.begin_my_card_image(text, boolean, bigint[]) is
  'Check a card import before its image is decoded: the caller''s avatar, If-Match, the upload rate.';
revoke all on function avatar_chat.begin_my_card_image(text, boolean, bigint[]) from public, anon, authenticated;

-- write_my_avatar_card: POST /avatars/me/card's write, one round trip as the user, under
-- RLS. p_replace false: a new avatar (no row when the caller already has one). True: the
-- caller's avatar gets the card's name, personality, backstory and card, and its image
-- when p_image_path is not null (else it keeps its own), as one new version; no row when
-- the caller has no avatar; `if_match` as in update_my_avatar (null: any version; AC412
-- with DETAIL {"etag": ...} when stale). Answers the row as committed and the image folder
-- it no longer points at (for the caller to remove once this committed).
create function avatar_chat.write_my_avatar_card(
  claims text,
  p_replace boolean,
  p_name text,
  p_personality public.personality_type,
  p_backstory text,
  p_card jsonb,
  p_image_path text,
  if_match bigint[]
)
returns table (
  id uuid,
  user_id uuid,
  name text,
  personality public.personality_type,
  backstory text,
  version bigint,
  created_at timestamptz,
  updated_at timestamptz,
  image_path text,
  previous_image_path text
)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
#variable_conflict use_column
declare
  cur_id uuid;
  cur_version bigint;
  cur_image_path text;
begin
  perform avatar_chat.act_as(claims);

  if not p_replace then
    return query
      insert into public.avatars as a (name, personality, backstory, card, image_path)
      values (p_name, p_personality, p_backstory, p_card, p_image_path)
      on conflict (user_id) do nothing
      returning a.id, a.user_id, a.name, a.personality, a.backstory, a.version,
                a.created_at, a.updated_at, a.image_path, null::text;
    return;
  end if;

  select a.id, a.version, a.image_path into cur_id, cur_version, cur_image_path
    from public.avatars a where a.user_id = (select auth.uid()) for update;
  if not found then
    return;
  end if;
  if if_match is not null and not (cur_version = any (if_match)) then
    raise exception 'If-Match does not match the avatar''s current version (%).', cur_version
      using errcode = 'AC412', hint = 'precondition_failed',
            detail = json_build_object('etag', format('"%s"', cur_version))::text;
  end if;
  return query
    update public.avatars a
       set name = p_name, personality = p_personality, backstory = p_backstory, card = p_card,
           image_path = coalesce(p_image_path, a.image_path)
     where a.id = cur_id
    returning a.id, a.user_id, a.name, a.personality, a.backstory, a.version,
              a.created_at, a.updated_at, a.image_path,
              case when p_image_path is not null and cur_image_path is distinct from p_image_path
                   then cur_image_path end;
end
$$;

comment on function avatar_chat.write_my_avatar_card(text, boolean, text, public.personality_type, text, jsonb, text, bigint[]) is
  'Create the caller''s avatar from a character card, or overwrite it with one; returns the row and the folder before.';
revoke all on function avatar_chat.write_my_avatar_card(text, boolean, text, public.personality_type, text, jsonb, text, bigint[])
  from public, anon, authenticated;
