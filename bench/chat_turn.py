"""Latency of one chat turn (`POST /conversations/{id}/messages`, JSON answer) on one
worker with the offline provider (no delay), against hello-world requests in the same run.

One user with an avatar and `--conversations` conversations; `--turns` turns are sent
one at a time, rotating over the conversations (so each prompt window fills up as in
real use). Each iteration also times `GET /hello` and `PATCH /hello` on the hello-world
server, interleaved, so both see the same machine noise. All requests use one kept-alive
connection per server from a minimal blocking client (stdlib http.client).

    .venv/bin/python -m bench.chat_turn [--turns 200] [--conversations 10]

"Server time beyond baseline" = median(turn) - median(hello PATCH): what a turn costs
on top of an HTTP round trip with a JSON body. Design budget: <= 3 ms median beyond the
provider's own time (the offline provider's own time is measured in-process here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from typing import Any

import httpx
from tests.factories import User

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import OfflineProvider
from bench.common import (
    BenchSession,
    SequentialClient,
    add_common_args,
    create_avatars,
    create_users,
    machine_info,
    run_main,
    step,
    summarize_ms,
    write_results,
)

NAME = "chat_turn"
BUDGET_MS = 3.0
HELLO_BODY = json.dumps({"personality": "witty"}).encode()


def create_conversations(base_url: str, user: User, count: int) -> list[str]:
    ids: list[str] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for i in range(count):
            response = client.post(
                "/conversations",
                json={"mode": "companion" if i % 2 else "assistant", "title": f"bench {i}"},
                headers=user.headers,
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST /conversations: {response.status_code} {response.text}")
            ids.append(response.json()["id"])
    return ids


def message(i: int) -> bytes:
    text = f"Message {i}: tell me something nice about today, and keep it short please."
    return json.dumps({"content": text}).encode()


def offline_provider_seconds(samples: int = 200, window: int = 20) -> list[float]:
    """The offline provider's own time for a realistic prompt, in-process: the part of a
    turn that is not the server's (about zero with no chunk delay)."""
    avatar = AvatarSnapshot(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        name="Bench",
        personality="witty",
        backstory="A benchmark avatar.",
        version=7,
    )
    history = tuple(
        PromptMessage("user" if i % 2 == 0 else "assistant", f"window message {i} " * 8)
        for i in range(window)
    )
    request = ChatRequest(
        avatar=avatar,
        mode="assistant",
        messages=(PromptMessage("system", "You are Bench."), *history, PromptMessage("user", "Hello there")),
    )
    provider = OfflineProvider(chunk_delay_s=0.0)

    async def run() -> list[float]:
        out: list[float] = []
        for _ in range(samples):
            start = time.perf_counter()
            async for _chunk in provider.stream(request):
                pass
            out.append(time.perf_counter() - start)
        return out

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_turn", description=__doc__)
    add_common_args(parser)
    args = parser.parse_args(argv)

    turn_s: list[float] = []
    get_s: list[float] = []
    patch_s: list[float] = []
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    reply_statuses: Counter[str] = Counter()

    with BenchSession(NAME) as session:
        with step("database"):
            dsn = session.database()
        with step("servers (1 worker each)"):
            app = session.start_app(workers=1)
            hello = session.start_hello(workers=1)
        with step(f"user, avatar, {args.conversations} conversations"):
            (user,) = asyncio.run(create_users(dsn, session.jwt_secret, 1))
            asyncio.run(create_avatars(app.base_url, [user]))
            conversations = create_conversations(app.base_url, user, args.conversations + 1)
            warm_conversation, conversations = conversations[0], conversations[1:]
        auth = {**user.headers, "Accept": "application/json"}
        app_client = SequentialClient(app.port)
        hello_client = SequentialClient(hello.port)
        try:
            with step(f"warm-up: {args.warmup_turns} turns"):
                for i in range(args.warmup_turns):
                    hello_client.request("GET", "/hello")
                    hello_client.request("PATCH", "/hello", HELLO_BODY)
                    app_client.request(
                        "POST", f"/conversations/{warm_conversation}/messages", message(i), auth
                    )
            meter = session.cpu_meter(app=app, hello=hello)
            cpu_before = meter.snapshot()
            with step(f"{args.turns} sequential turns over {len(conversations)} conversations"):
                for i in range(args.turns):
                    status, _, seconds = hello_client.request("GET", "/hello")
                    statuses[f"GET /hello {status}"] += 1
                    get_s.append(seconds)
                    status, _, seconds = hello_client.request("PATCH", "/hello", HELLO_BODY)
                    statuses[f"PATCH /hello {status}"] += 1
                    patch_s.append(seconds)
                    conversation = conversations[i % len(conversations)]
                    status, body, seconds = app_client.request(
                        "POST", f"/conversations/{conversation}/messages", message(i), auth
                    )
                    statuses[f"POST messages {status}"] += 1
                    turn_s.append(seconds)
                    if status != 201:
                        if len(failures) < 10:
                            failures.append(f"turn {i}: {status} {body[:300]!r}")
                        continue
                    reply_statuses[json.loads(body)["assistant_message"]["status"]] += 1
            cpu_after = meter.snapshot()
        finally:
            app_client.close()
            hello_client.close()
        logs = session.server_log_report()

    provider = summarize_ms(offline_provider_seconds())
    turns = summarize_ms(turn_s)
    hello_get = summarize_ms(get_s)
    hello_patch = summarize_ms(patch_s)
    beyond = turns["p50_ms"] - hello_patch["p50_ms"]
    beyond_provider = beyond - provider["p50_ms"]
    ratio = turns["p50_ms"] / hello_patch["p50_ms"]
    cpu = {
        name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / max(1, args.turns) for name in cpu_after
    }

    def row(label: str, s: dict[str, float]) -> str:
        return (
            f"  {label:<28} median {s['p50_ms']:7.3f} ms   p90 {s['p90_ms']:7.3f} ms"
            f"   p99 {s['p99_ms']:7.3f} ms   max {s['max_ms']:7.3f} ms"
        )

    print()
    print(f"chat_turn: 1 worker, offline provider (delay 0), {args.turns} sequential turns, JSON answers")
    print(row("POST .../messages (turn)", turns))
    print(row("GET /hello (baseline)", hello_get))
    print(row("PATCH /hello (baseline)", hello_patch))
    print(row("offline provider in-process", provider))
    print(f"  server time beyond baseline = {beyond:.3f} ms median (turn / hello PATCH = {ratio:.1f}x)")
    print(
        f"  minus the provider's own {provider['p50_ms']:.3f} ms = {beyond_provider:.3f} ms "
        f"(design budget <= {BUDGET_MS:g} ms: {'met' if beyond_provider <= BUDGET_MS else 'NOT met'}"
        " in this run)"
    )
    print("  CPU ms per iteration: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
    print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    if reply_statuses:
        print("  reply status: " + ", ".join(f"{k}: {v}" for k, v in sorted(reply_statuses.items())))
    for failure in failures:
        print(f"  FAILED {failure}")
    for name, lines in logs.items():
        print(f"  {name} log: {len(lines)} line(s); first: {lines[0][:200]}")

    result: dict[str, Any] = {
        "benchmark": NAME,
        "settings": vars(args),
        "machine": machine_info(),
        "turn": turns,
        "hello_get": hello_get,
        "hello_patch": hello_patch,
        "offline_provider": provider,
        "beyond_baseline_ms": beyond,
        "beyond_baseline_and_provider_ms": beyond_provider,
        "ratio_turn_to_hello_patch": ratio,
        "budget_ms": BUDGET_MS,
        "cpu_ms_per_iteration": cpu,
        "statuses": dict(statuses),
        "reply_statuses": dict(reply_statuses),
        "failures": failures,
        "server_logs": {name: lines[:200] for name, lines in logs.items()},
        "samples_ms": {
            "turn": [s * 1000 for s in turn_s],
            "hello_get": [s * 1000 for s in get_s],
            "hello_patch": [s * 1000 for s in patch_s],
        },
    }
    if not args.no_json:
        print(f"  results: {write_results(NAME, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
