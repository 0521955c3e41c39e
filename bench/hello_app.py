"""The baseline: the least a FastAPI app can do per request on the same server stack.

Served by `uvicorn bench.hello_app:app` with the API's settings (uvloop, httptools,
same worker count, log level warning), so "API minus hello" is the API's own work.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="hello", docs_url=None, redoc_url=None, openapi_url=None)


class PersonaBody(BaseModel):
    personality: str


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.patch("/hello")
async def patch_hello(body: PersonaBody) -> dict[str, str | int]:
    return {"personality": body.personality, "version": 1}
