-- A per-user rate for avatar image uploads (issue #18, "bounded image work"): counted in
-- Postgres so it holds across workers and machines, and checked before the API decodes an
-- image, so an upload refused for the rate costs no decode. The API writes
-- RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE at start-up with configure_image_upload_rate; 0
-- disables it.

alter table avatar_chat.limits
  add column image_uploads_per_minute integer not null default 0,
  add constraint limits_image_uploads_nonnegative check (image_uploads_per_minute >= 0);

-- Image uploads: the API counts one, as the user, before it decodes the image (PUT
-- /avatars/me/image, through begin_my_image_upload in 10_avatars.sql), so a refused
-- upload costs no decode. Every upload counted is one the API went on to decode (or found
-- busy); a refused one rolls back with its statement and counts nothing.
create table avatar_chat.image_upload_counters (
  user_id uuid not null,
  window_start timestamptz not null,
  uploads integer not null,
  constraint image_upload_counters_pkey primary key (user_id),
  constraint image_upload_counters_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
comment on table avatar_chat.image_upload_counters is 'Per-user image upload count in the current one-minute window.';

revoke all on avatar_chat.image_upload_counters from public, anon, authenticated;

-- Counts one image upload of this user in the current minute; raises AC429
-- image_rate_limited with DETAIL {"retry_after": n} beyond limits.image_uploads_per_minute.
-- Called by begin_my_image_upload only (its owner's privileges, for the user it checked).
create function avatar_chat.count_image_upload(p_user_id uuid) returns void
language plpgsql
set search_path = ''
as $$
declare
  per_minute integer;
  uploads integer;
  window_start timestamptz := date_trunc('minute', now());
begin
  select l.image_uploads_per_minute into per_minute from avatar_chat.limits l where l.id;
  if coalesce(per_minute, 0) = 0 then
    return;
  end if;
  insert into avatar_chat.image_upload_counters as c (user_id, window_start, uploads)
  values (p_user_id, window_start, 1)
  on conflict (user_id) do update
    set uploads = case when c.window_start = excluded.window_start then c.uploads + 1 else 1 end,
        window_start = excluded.window_start
  returning c.uploads into uploads;
  if uploads > per_minute then
    raise exception 'Too many image uploads this minute; retry later.'
      using errcode = 'AC429', hint = 'image_rate_limited',
            detail = json_build_object(
              'retry_after',
              greatest(1, ceil(extract(epoch from (window_start + interval '1 minute' - now()))))::integer
            )::text;
  end if;
end
$$;

comment on function avatar_chat.count_image_upload(uuid) is
  'Count one image upload of a user in this minute; AC429 image_rate_limited beyond the limit.';
revoke all on function avatar_chat.count_image_upload(uuid) from public, anon, authenticated;

-- As configure_limits, for the image upload rate (0 disables it).
create function avatar_chat.configure_image_upload_rate(p_per_minute integer)
returns void
language sql
set search_path = ''
as $$
  insert into avatar_chat.limits as l (id, image_uploads_per_minute)
  values (true, p_per_minute)
  on conflict (id) do update
    set image_uploads_per_minute = excluded.image_uploads_per_minute,
        updated_at = now()
    where l.image_uploads_per_minute is distinct from excluded.image_uploads_per_minute;
$$;

revoke all on function avatar_chat.configure_image_upload_rate(integer) from public, anon, authenticated;

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
