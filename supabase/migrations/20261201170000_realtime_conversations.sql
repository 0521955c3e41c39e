-- Supabase Realtime for conversations too: a client's conversation list shows new
-- conversations, titles (generated after the first reply) and updated_at live. RLS
-- decides what each subscriber receives, as for messages (conversations_select_own).
--
-- Like 20261122220000_chat.sql for messages, this never blocks a deploy: where the
-- publication is missing or belongs to another role, it says what to do by hand and
-- goes on.
do $$
begin
  alter publication supabase_realtime add table public.conversations;
exception
  when duplicate_object then
    raise notice 'public.conversations is already in publication supabase_realtime';
  when object_not_in_prerequisite_state then  -- a FOR ALL TABLES publication streams it already
    raise notice 'public.conversations not added to publication supabase_realtime: %', sqlerrm;
  when undefined_object then
    raise notice 'publication supabase_realtime does not exist, so Supabase Realtime does not stream public.conversations; '
      'turn on Realtime for the table in the dashboard (Database > Publications), or create the publication and run: '
      'alter publication supabase_realtime add table public.conversations;';
  when insufficient_privilege then
    raise notice 'not the owner of publication supabase_realtime (%), so Supabase Realtime does not stream '
      'public.conversations; turn on Realtime for the table in the dashboard (Database > Publications), or run as its '
      'owner: alter publication supabase_realtime add table public.conversations;', sqlerrm;
end
$$;
