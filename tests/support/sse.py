"""Reading the server-sent events of a send, as a client does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """A whole, finished stream."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """Events as they arrive; the caller may stop early (and so leave mid-stream)."""
    name = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield name, json.loads(line[len("data: ") :])


async def sse_records(response: httpx.Response) -> AsyncIterator[tuple[str, Any, str | None]]:
    """Events as they arrive, with their SSE `id` (None when the event has none)."""
    name, event_id = "", None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = line[len("id: ") :]
        elif line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield name, json.loads(line[len("data: ") :]), event_id
        elif not line:
            name, event_id = "", None
