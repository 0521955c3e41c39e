-- Newest messages of a conversation, read under RLS, in time independent of its length.
--
-- A statement run many times (asyncpg's prepared statements, the statements inside a
-- plpgsql function) gets a generic plan, built without knowing the conversation. With
-- RLS adding `user_id = auth.uid()`, the planner combined messages_user_id_idx and the
-- (conversation_id, seq) key in a bitmap scan of the whole conversation, then sorted it:
-- 13 ms for a window of 20 in a conversation of 33,000 messages, growing with its length.
-- An index led by user_id and ending in seq answers both conditions and the order, so a
-- page or a window stops after its own rows in every plan; it also serves the foreign
-- key to auth.users (account deletion), which messages_user_id_idx was there for.

create index messages_user_id_conversation_id_seq_idx on public.messages (user_id, conversation_id, seq);
drop index public.messages_user_id_idx;
