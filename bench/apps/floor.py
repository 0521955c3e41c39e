"""The database floor: the least a FastAPI + asyncpg app can do for the API's writes.

The same SQL round trips on the same tables and triggers as the API, and nothing else:
no token check (a PATCH names its user in a plain `X-User-Id` header; a turn writes as
the conversation's owner), no role switch and no claims (it connects as the table owner,
so no RLS), no cache, no idempotency, lease renewal or worker liveness. Served by
`uvicorn bench.apps.floor:app` with the API's server settings (uvloop, httptools, same
worker count); the benchmarks start it with

    FLOOR_DATABASE_URL          the database (or pgbouncer) to connect to
    FLOOR_STATEMENT_CACHE_SIZE  asyncpg's prepared statement cache (0 behind a
                                transaction pooler; default 100, as the API)
    FLOOR_POOL_MAX_SIZE         connections per worker (default 10, as the API)
    FLOOR_WINDOW                messages read for each turn's prompt (default 20, as the
                                API's CHAT_WINDOW_MESSAGES; 0: none)

Routes:
    PATCH /floor/persona                     one round trip: the UPDATE ... RETURNING
    POST  /floor/conversations/{id}/messages two round trips, as a chat turn of the API:
          `bench_floor.begin_turn` (lock the conversation, insert the user message and a
          `streaming` placeholder, return the avatar and, with no cache, the last 20
          messages for the prompt), then the offline reply (no delay)
          and the UPDATE settling the placeholder as `complete`. JSON (201), or SSE with
          `Accept: text/event-stream` (`user_message`, `delta`s, `done`), as the API.
    GET   /ready

`bench_floor.begin_turn` is created at start-up in a schema of the floor's own, never in
`public` or `avatar_chat`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import OfflineProvider

LEASE_S = 15.0  # the API's default CHAT_REPLY_LEASE_S: the placeholder carries a lease too
# Messages read for the prompt on every turn (it has no cache); the API's default
# CHAT_WINDOW_MESSAGES. FLOOR_WINDOW=0 (bench option --floor-window 0) makes the floor
# skip the window entirely, a stricter floor than the API's work.
WINDOW = int(os.environ.get("FLOOR_WINDOW", "20"))
_SETUP_LOCK = 0x666C6F72  # "flor": workers starting together create the function one at a time

SETUP_SQL = """
create schema if not exists bench_floor;

-- Step 1 of a turn in one round trip: what avatar_chat.begin_turn writes for a new
-- exchange, without the role switch, claims, idempotency and liveness checks.
create or replace function bench_floor.begin_turn(
  p_conversation_id uuid, p_content text, p_lease_s float8, p_window integer
)
returns table (
  mode text,
  avatar_id uuid,
  avatar_user_id uuid,
  avatar_name text,
  avatar_personality text,
  avatar_version bigint,
  user_message_id uuid,
  user_seq bigint,
  user_created_at timestamptz,
  reply_id uuid,
  reply_seq bigint,
  reply_created_at timestamptz,
  window_roles text[],
  window_contents text[]
)
language plpgsql
volatile
as $$
declare
  conv public.conversations;
  av public.avatars;
  um public.messages;
  rp public.messages;
begin
  select * into conv from public.conversations c where c.id = p_conversation_id for update;
  if not found then
    return;
  end if;
  select * into av from public.avatars a where a.user_id = conv.user_id;
  if not found then
    return;
  end if;
  -- No cache: the recent window is read on every turn (what the prompt needs).
  select coalesce(array_agg(w.role::text order by w.seq), '{}'),
         coalesce(array_agg(w.content order by w.seq), '{}')
    into window_roles, window_contents
    from (select m.seq, m.role, m.content from public.messages m
           where m.conversation_id = conv.id and m.status = 'complete'
           order by m.seq desc limit p_window) w;
  insert into public.messages (conversation_id, user_id, role, content, status)
  values (conv.id, conv.user_id, 'user', p_content, 'complete')
  returning * into um;
  insert into public.messages (conversation_id, user_id, role, content, status, reply_to, lease_expires_at)
  values (conv.id, conv.user_id, 'assistant', '', 'streaming', um.id,
          now() + make_interval(secs => p_lease_s))
  returning * into rp;
  return query select conv.mode::text, av.id, av.user_id, av.name, av.personality::text, av.version,
                      um.id, um.seq, um.created_at, rp.id, rp.seq, rp.created_at,
                      window_roles, window_contents;
end
$$;
"""

BEGIN = (
    "select mode, avatar_id, avatar_user_id, avatar_name, avatar_personality, avatar_version,"
    " user_message_id, user_seq, user_created_at, reply_id, reply_seq, reply_created_at,"
    " window_roles, window_contents from bench_floor.begin_turn($1, $2, $3, $4)"
)
FINISH = (
    "update public.messages set content = $2, status = 'complete', persona_version = $3,"
    " personality = $4::public.personality_type, lease_expires_at = null where id = $1"
    " returning id, conversation_id, seq, role::text as role, content, status::text as status,"
    " persona_version, personality::text as personality, error_code, created_at"
)
_PATCH = (
    "update public.avatars set personality = $2::public.personality_type where user_id = $1"
    " returning id, user_id, name, personality::text as personality, backstory, version,"
    " created_at, updated_at"
)

_provider = OfflineProvider(chunk_delay_s=0.0)


async def _no_reset(_: asyncpg.Connection) -> None:
    # Like the API: no RESET ALL round trip when a connection goes back to the pool.
    return None


async def open_pool(application_name: str = "") -> asyncpg.Pool:
    """The floor's pool (FLOOR_* settings), `bench_floor.begin_turn` created: what the
    floor and the relay floor (bench/apps/relay.py) start with."""
    pool = await asyncpg.create_pool(
        os.environ["FLOOR_DATABASE_URL"],
        min_size=1,
        max_size=int(os.environ.get("FLOOR_POOL_MAX_SIZE", "10")),
        statement_cache_size=int(os.environ.get("FLOOR_STATEMENT_CACHE_SIZE", "100")),
        reset=_no_reset,
        server_settings={"application_name": application_name} if application_name else None,
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("select pg_advisory_xact_lock($1)", _SETUP_LOCK)
            await conn.execute(SETUP_SQL)
    except BaseException:
        await pool.close()
        raise
    return pool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    pool = await open_pool()
    try:
        yield {"pool": pool}
    finally:
        await pool.close()


app = FastAPI(title="database floor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)


class PersonaBody(BaseModel):
    personality: str


class MessageBody(BaseModel):
    content: str


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")), status_code, media_type="application/json")


def plain_row(row: asyncpg.Record) -> dict[str, Any]:
    """A row as JSON-ready values (uuids and times as strings)."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
        for k, v in row.items()
    }


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.patch("/floor/persona")
async def patch_persona(
    body: PersonaBody, request: Request, x_user_id: Annotated[uuid.UUID, Header()]
) -> Response:
    pool: asyncpg.Pool = request.state.pool
    row = await pool.fetchrow(_PATCH, x_user_id, body.personality)
    if row is None:
        return _json({"error": "no avatar"}, 404)
    return _json(plain_row(row))


@app.post("/floor/conversations/{conversation_id}/messages")
async def send_message(conversation_id: uuid.UUID, body: MessageBody, request: Request) -> Response:
    pool: asyncpg.Pool = request.state.pool
    begun = await pool.fetchrow(BEGIN, conversation_id, body.content, LEASE_S, WINDOW)
    if begun is None:
        return _json({"error": "no such conversation, or no avatar"}, 404)
    user_message = user_message_json(begun, conversation_id, body.content)
    avatar = AvatarSnapshot(
        id=begun["avatar_id"],
        user_id=begun["avatar_user_id"],
        name=begun["avatar_name"],
        personality=begun["avatar_personality"],
        backstory="",
        version=begun["avatar_version"],
    )
    window = tuple(PromptMessage(role, text) for role, text in prompt_window(begun))
    prompt = ChatRequest(
        avatar=avatar, mode=begun["mode"], messages=(*window, PromptMessage("user", body.content))
    )

    async def finish(content: str) -> dict[str, Any]:
        row = await pool.fetchrow(FINISH, begun["reply_id"], content, avatar.version, avatar.personality)
        assert row is not None
        return plain_row(row)

    if "text/event-stream" in request.headers.get("accept", ""):

        async def events() -> AsyncIterator[str]:
            yield event("user_message", user_message)
            parts: list[str] = []
            async for chunk in _provider.stream(prompt):
                parts.append(chunk)
                yield event("delta", {"content": chunk})
            yield event("done", await finish("".join(parts)))

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            status_code=201,
        )
    content = "".join([chunk async for chunk in _provider.stream(prompt)])
    return _json({"user_message": user_message, "assistant_message": await finish(content)}, 201)


def user_message_json(begun: asyncpg.Record, conversation_id: uuid.UUID, content: str) -> dict[str, Any]:
    """The user message `begin_turn` inserted, as the API's `user_message` event has it."""
    return {
        "id": str(begun["user_message_id"]),
        "conversation_id": str(conversation_id),
        "seq": begun["user_seq"],
        "role": "user",
        "content": content,
        "status": "complete",
        "persona_version": None,
        "personality": None,
        "error_code": None,
        "created_at": begun["user_created_at"].isoformat(),
    }


def prompt_window(begun: asyncpg.Record) -> list[tuple[Literal["user", "assistant"], str]]:
    """The recent messages `begin_turn` read, oldest first, as (role, text)."""
    return [
        ("user" if role == "user" else "assistant", text)
        for role, text in zip(begun["window_roles"], begun["window_contents"], strict=True)
    ]


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
