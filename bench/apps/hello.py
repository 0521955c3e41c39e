"""The baseline: the least a FastAPI app can do per request on the same server stack.

Served by `uvicorn bench.apps.hello:app` with the API's settings (uvloop, httptools,
same worker count, log level warning), so "API minus hello" is the API's own work.
`POST /hello/turn` echoes a message body as an exchange of the shape a chat turn answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, status
from pydantic import BaseModel

app = FastAPI(title="hello", docs_url=None, redoc_url=None, openapi_url=None)

_CONVERSATION = "00000000-0000-4000-8000-000000000000"
_CREATED_AT = "2026-12-01T12:00:00.000000+00:00"


class PersonaBody(BaseModel):
    personality: str


class MessageBody(BaseModel):
    content: str


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.patch("/hello")
async def patch_hello(body: PersonaBody) -> dict[str, str | int]:
    return {"personality": body.personality, "version": 1}


def _message(seq: int, role: str, content: str) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{seq:012d}",
        "conversation_id": _CONVERSATION,
        "seq": seq,
        "role": role,
        "content": content,
        "status": "complete",
        "persona_version": None if role == "user" else 1,
        "personality": None if role == "user" else "witty",
        "error_code": None,
        "created_at": _CREATED_AT,
    }


@app.post("/hello/turn", status_code=status.HTTP_201_CREATED)
async def hello_turn(body: MessageBody) -> dict[str, Any]:
    return {
        "user_message": _message(1, "user", body.content),
        "assistant_message": _message(2, "assistant", f"Hello! You said: {body.content}"),
    }
