-- Declarative schema: what this backend adds to Supabase Storage (see 00_avatar_chat.sql
-- for how these files relate to the migrations): the private `avatars` bucket, and the
-- policy that lets a signed-in client read the objects under its own folder.

insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values ('avatars', 'avatars', false, 1048576, array['image/webp'])
on conflict (id) do nothing;

create policy avatars_read_own_images on storage.objects
  for select to authenticated
  using (bucket_id = 'avatars' and (storage.foldername(name))[1] = (select auth.uid())::text);
