-- Declarative schema: the live definition of worker liveness (avatar_chat.workers).
--
-- This is what the database looks like after every file in supabase/migrations/; the
-- migrations stay append-only. Change an object here AND in a new migration
-- (`supabase db diff -f <name>` drafts one; comments, column grants and publication
-- membership it does not see, so write those by hand). tests/core/test_schema_files.py
-- fails while the two disagree.
--
-- Every API worker keeps a row here, renewed in its own short transaction every third of
-- its TTL (WORKER_TTL_S): no session state, so it works through any pooler. A reply being
-- generated names its worker (messages.worker_id); once that row has expired, a retry
-- with the same Idempotency-Key takes the reply over.

create table avatar_chat.workers (
  id bigint not null,
  host text not null default '',
  pid integer not null default 0,
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint workers_pkey primary key (id),
  constraint workers_host_length check (char_length(host) <= 255)
);
comment on table avatar_chat.workers is
  'API worker processes, alive while expires_at is in the future; each renews its own row.';
revoke all on avatar_chat.workers from public, anon, authenticated;

-- Register or renew a worker for p_ttl_s seconds; rows dead for a day are swept.
create function avatar_chat.worker_heartbeat(p_id bigint, p_ttl_s double precision, p_host text, p_pid integer)
returns void
language sql
volatile
set search_path = ''
as $$
  insert into avatar_chat.workers as w (id, host, pid, expires_at)
  values (p_id, left(p_host, 255), p_pid, now() + make_interval(secs => p_ttl_s))
  on conflict (id) do update
    set heartbeat_at = now(), expires_at = now() + make_interval(secs => p_ttl_s);
  delete from avatar_chat.workers w where w.expires_at < now() - interval '1 day';
$$;
comment on function avatar_chat.worker_heartbeat(bigint, double precision, text, integer) is
  'Register or renew an API worker''s liveness row.';
revoke all on function avatar_chat.worker_heartbeat(bigint, double precision, text, integer)
  from public, anon, authenticated;

-- A worker that shuts down cleanly leaves at once; its replies are settled by then.
create function avatar_chat.worker_leave(p_id bigint)
returns void
language sql
volatile
set search_path = ''
as $$
  delete from avatar_chat.workers w where w.id = p_id;
$$;
comment on function avatar_chat.worker_leave(bigint) is 'Remove an API worker''s liveness row.';
revoke all on function avatar_chat.worker_leave(bigint) from public, anon, authenticated;
