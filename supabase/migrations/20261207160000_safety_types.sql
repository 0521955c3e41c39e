-- Safety for companion apps (issue #19), part 1: the new enum values, in a migration of
-- their own (a value added by ALTER TYPE cannot be used in the transaction that adds it).
alter type public.message_role add value 'notice';
comment on type public.message_role is
  'user; assistant: the avatar''s reply; notice: a safety notice the operator wrote (see notice_kind), never sent to the model.';
alter type public.message_status add value 'filtered';
alter type public.message_status add value 'blocked';
comment on type public.message_status is
  'streaming: being generated; complete; failed: the provider failed (see error_code); interrupted: cut off (shutdown or crash); stopped: stopped on request, with the text so far; filtered: a reply moderation stopped, its content replaced by the operator''s text; blocked: a user message moderation refused, never sent to the model.';
create type public.notice_kind as enum ('disclosure', 'break', 'crisis');
comment on type public.notice_kind is
  'disclosure: you are chatting with an AI; break: a reminder to take a break (minors); crisis: crisis services (docs/safety.md).';
