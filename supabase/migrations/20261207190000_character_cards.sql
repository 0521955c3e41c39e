-- Avatars as character cards (issue #21): POST /avatars/me/card makes or overwrites the
-- avatar from a Character Card V2 or V3 (JSON, or a PNG with the card in a tEXt chunk), and
-- GET /avatars/me/card answers one. What a card holds beyond the persona (scenario, greetings,
-- the lorebook, tags, extensions, ...) is kept in avatars.card so that a card goes out as it
-- came in. Not versioned in avatar_history (see avatars_record_history in
-- supabase/schemas/10_avatars.sql), never given to the model.

alter table public.avatars add column card jsonb;

comment on column public.avatars.card is
  'The character card the avatar was made from (POST /avatars/me/card): {spec, spec_version, data} without '
  'data.name (the name column); data.description and data.personality as the card had them. Not versioned, '
  'never given to the model. At most 2 MiB as JSON text, an object. Null: none.';

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

-- The API writes the card (and, when a card brings an image, the image folder of a new
-- avatar) as the user, under the same RLS policies as every other column.
grant insert (image_path, card) on public.avatars to authenticated;
grant update (card) on public.avatars to authenticated;

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
