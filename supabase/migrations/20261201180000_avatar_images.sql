-- Avatar images, and tokens of deleted users.
--
-- An avatar's image is two square WebP objects, <image_path>/512.webp and
-- <image_path>/128.webp, in the private Storage bucket `avatars`; image_path is
-- '<user_id>/<32 hex>', so every object of a user lives under their own folder, which is
-- what the Storage policy below keys on. A new image gets a new folder: the row points at
-- it once the objects exist, and the old folder is removed only after that committed.

alter table public.avatars add column image_path text;
alter table public.avatars add constraint avatars_image_path_own_folder check (
  image_path ~ '^[0-9a-f-]{36}/[0-9a-f]{32}$' and split_part(image_path, '/', 1) = user_id::text
);
comment on column public.avatars.image_path is
  'Storage folder of the avatar''s image (<user_id>/<id>, holding 512.webp and 128.webp); null: none.';
grant update (image_path) on public.avatars to authenticated;

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

-- A deleted user's access token still verifies until it expires, and no table row refers
-- to them any more: act_as refuses it, so every request of that user fails at once on
-- every worker, in the round trip it makes anyway (one primary-key probe). Checked as the
-- connecting role, before switching: the API roles cannot read auth.users.
create or replace function avatar_chat.act_as(claims text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  if not exists (select from auth.users u where u.id = (claims::jsonb ->> 'sub')::uuid) then
    raise exception 'The user of this token no longer exists.'
      using errcode = 'AC401', hint = 'user_not_found';
  end if;
  perform set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);
end
$$;

-- The Storage bucket (private: files are reached through signed URLs the API makes) and
-- the policy that lets a signed-in client read its own files with its own token. On a
-- database without Supabase Storage, or where the migrating role may not touch storage
-- (`postgres` does not own storage.objects on current projects), this says what to do by
-- hand and goes on: the API writes and signs with the service-role key, so it works
-- without the policy; only clients reading Storage directly need it.
do $$
begin
  if to_regclass('storage.buckets') is null then
    raise notice 'no storage.buckets here (Supabase Storage is not installed): the avatars bucket was not created';
    return;
  end if;
  insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
  values ('avatars', 'avatars', false, 1048576, array['image/webp'])
  on conflict (id) do nothing;
exception when insufficient_privilege then
  raise notice 'may not write storage.buckets: create a private bucket "avatars" in the dashboard '
    '(Storage > New bucket; 1 MB, image/webp)';
end
$$;

do $$
begin
  if to_regclass('storage.objects') is null then
    return;
  end if;
  create policy avatars_read_own_images on storage.objects
    for select to authenticated
    using (bucket_id = 'avatars' and (storage.foldername(name))[1] = (select auth.uid())::text);
exception
  when duplicate_object then
    null;
  when insufficient_privilege then
    raise notice 'not the owner of storage.objects: to let clients read their own avatar images with '
      'their own token, add in the dashboard (Storage > Policies) a SELECT policy for authenticated on '
      'bucket avatars: (storage.foldername(name))[1] = (select auth.uid())::text';
end
$$;
