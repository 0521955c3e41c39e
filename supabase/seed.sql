-- Local development seed (`supabase db reset` runs it after the migrations).
-- Intentionally empty of users: create them with Supabase Auth (or, on the embedded
-- database, `avatar-chat token --email you@example.com`), then POST /avatars/me.
select 1;
