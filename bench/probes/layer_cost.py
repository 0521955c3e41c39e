"""In-process: what the API's outermost layer (`RequestObserver`) costs one request, in
microseconds, with nothing else around it: an ASGI app that answers at once, called
directly (`bare`), through the layer with METRICS_ENABLED=false (`off`: request id,
context variable, header, access-log check) and with metrics on (`on`: also one
histogram observation), in multiprocess mode as `avatar-chat serve` runs it when
PROMETHEUS_MULTIPROC_DIR is set. `bench.scenarios.observability` runs it in a subprocess with that
set; alone:

    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) .venv/bin/python -m bench.probes.layer_cost [--requests 50000]

Also what a chat turn and a persona switch record besides their request
(`us_per_turn_recordings`: two pool waits, two SessionStore lookups, first token, reply
duration, outcome; `us_per_patch_recordings`: one pool wait). Prints one JSON
object: the best of `--repeats` runs per variant, us per request.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar_chat.chat.metrics import ChatMetrics
from avatar_chat.core.metrics import Metrics, multiprocess_dir
from avatar_chat.core.observability import RequestObserver
from avatar_chat.core.settings import Settings


class _Route:
    path = "/avatars/me/persona"


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route  # as the router leaves it
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def _measure(requests: int, repeats: int) -> dict[str, Any]:
    settings = Settings(_env_file=None)
    apps: dict[str, ASGIApp] = {
        "bare": _answer,
        "off": RequestObserver(_answer, Metrics(enabled=False), settings),
        "on": RequestObserver(_answer, Metrics(enabled=True), settings),
    }
    # The headers of a persona switch as wrk sends them (a Supabase access token is ~800 bytes).
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", b"Bearer " + b"x" * 800),
        (b"content-type", b"application/json"),
        (b"content-length", b"25"),
    ]

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, app in apps.items():
            started = time.perf_counter()
            for _ in range(requests):
                scope = {"type": "http", "method": "PATCH", "path": "/avatars/me/persona", "headers": headers}
                await app(scope, receive, send)
            us = (time.perf_counter() - started) / requests * 1e6
            best[name] = min(best.get(name, us), us)
    metrics = Metrics(enabled=True)
    chat = ChatMetrics.registered(metrics)
    turn = min(_turn_recordings(metrics, chat, requests) for _ in range(repeats))
    patch = min(_patch_recordings(metrics, requests) for _ in range(repeats))
    return {
        "us_per_request": best,
        "us_per_turn_recordings": turn,
        "us_per_patch_recordings": patch,
        "multiprocess": multiprocess_dir() is not None,
        "requests": requests,
    }


def _patch_recordings(metrics: Metrics, patches: int) -> float:
    """What a persona switch records besides its request (us): its one pool wait."""
    pool = metrics.pool
    started = time.perf_counter()
    for _ in range(patches):
        pool.acquire_seconds.observe(0.0001)
    return (time.perf_counter() - started) / patches * 1e6


def _turn_recordings(metrics: Metrics, chat: ChatMetrics, turns: int) -> float:
    """What a chat turn records besides its request (us): the pool waits of begin_turn and
    finish_turn, the avatar and window lookups, the first token, the reply, the outcome."""
    pool, store = metrics.pool, metrics.store
    started = time.perf_counter()
    for _ in range(turns):
        pool.acquire_seconds.observe(0.0001)
        store.avatar["hit"].inc()
        store.window["hit"].inc()
        chat.first_token_seconds.observe(0.0002)
        chat.reply_seconds.observe(0.0004)
        pool.acquire_seconds.observe(0.0001)
        chat.turns["complete"].inc()
    return (time.perf_counter() - started) / turns * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probes.layer_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(_measure(args.requests, args.repeats))))


if __name__ == "__main__":
    main()
