"""The relay floor: the least a FastAPI + httpx + asyncpg app can do to stream a model's
reply to a user and keep it.

A streamed send in two round trips, as the database floor's turn (bench/apps/floor.py,
whose `bench_floor.begin_turn`, statements and pool it shares), with a real model call in
between: `begin_turn` (lock the conversation, insert the user message and a `streaming`
placeholder, so the same triggers fire, return the avatar and the recent window), then a
streamed chat completion from an OpenAI-compatible server over httpx, each chunk's text
relayed as an SSE `delta` as it arrives, then the UPDATE settling the placeholder as
`complete` and `done`. No token check, no RLS, no cache, no lease renewal, no partial
saves: the text exists only in this worker until the reply is finished. Served by
`uvicorn bench.apps.relay:app` with the API's server settings; the benchmarks start it with
the floor's FLOOR_* variables and

    RELAY_MODEL_URL   the model's base URL (e.g. http://127.0.0.1:PORT/v1)
    RELAY_MODEL       the model name sent (default gpt-4o-mini, the API's LLM_MODEL)

Routes:
    POST /relay/conversations/{id}/messages  `Accept: text/event-stream`: `user_message`,
         `delta`s, `done` (the saved reply), or `error` (the model failed; nothing saved)
    GET  /ready

Its pool connections carry `application_name` bench-relay (the API's: avatar-chat).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from bench.apps.floor import (
    BEGIN,
    FINISH,
    LEASE_S,
    WINDOW,
    event,
    open_pool,
    plain_row,
    prompt_window,
    user_message_json,
)

APPLICATION_NAME = "bench-relay"
_MODEL = os.environ.get("RELAY_MODEL", "gpt-4o-mini")
_MAX_TOKENS = 1024  # the API's LLM_MAX_TOKENS


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    pool = await open_pool(APPLICATION_NAME)
    # As the openai SDK's client: keep-alive connections, no cap that a burst would meet.
    model = httpx.AsyncClient(
        base_url=os.environ["RELAY_MODEL_URL"],
        headers={"Authorization": "Bearer bench"},
        timeout=httpx.Timeout(60, connect=5),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000),
    )
    try:
        yield {"pool": pool, "model": model}
    finally:
        await model.aclose()
        await pool.close()


app = FastAPI(title="relay floor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)


class MessageBody(BaseModel):
    content: str


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.post("/relay/conversations/{conversation_id}/messages")
async def send_message(conversation_id: uuid.UUID, body: MessageBody, request: Request) -> Response:
    pool: asyncpg.Pool = request.state.pool
    model: httpx.AsyncClient = request.state.model
    begun = await pool.fetchrow(BEGIN, conversation_id, body.content, LEASE_S, WINDOW)
    if begun is None:
        return Response('{"error":"no such conversation, or no avatar"}', 404, media_type="application/json")
    system = f"You are {begun['avatar_name']}, a {begun['avatar_personality']} avatar ({begun['mode']})."
    messages = [
        {"role": "system", "content": system},
        *({"role": role, "content": text} for role, text in prompt_window(begun)),
        {"role": "user", "content": body.content},
    ]
    completion = {"model": _MODEL, "messages": messages, "stream": True, "max_tokens": _MAX_TOKENS}

    async def events() -> AsyncIterator[str]:
        yield event("user_message", user_message_json(begun, conversation_id, body.content))
        parts: list[str] = []
        try:
            async with model.stream("POST", "/chat/completions", json=completion) as answer:
                answer.raise_for_status()
                async for line in answer.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices: list[dict[str, Any]] = json.loads(line[6:]).get("choices") or [{}]
                    text = choices[0].get("delta", {}).get("content")
                    if text:
                        parts.append(text)
                        yield event("delta", {"content": text})
        except (httpx.HTTPError, ValueError) as exc:
            yield event("error", {"code": "relay_model_failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        row = await pool.fetchrow(
            FINISH, begun["reply_id"], "".join(parts), begun["avatar_version"], begun["avatar_personality"]
        )
        assert row is not None
        yield event("done", plain_row(row))

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        status_code=201,
    )
