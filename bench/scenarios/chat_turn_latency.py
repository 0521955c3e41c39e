"""Latency of one chat turn (`POST /conversations/{id}/messages`, JSON answer) on one
worker with the offline provider (no delay), against its database floor's turn and
hello-world requests in the same run.

One user with an avatar and `--conversations` conversations on the API and as many for
the floor; `--turns` turns are sent one at a time to each, rotating over the
conversations (so each prompt window fills up as in real use). Each iteration also
times `GET /hello` and `PATCH /hello` on the hello-world server, and the floor's turn
(`bench/apps/floor.py`: the same two round trips, no token check, no RLS, no cache),
interleaved, so all see the same machine noise. All requests use one kept-alive
connection per server from a minimal blocking client (stdlib http.client).

    .venv/bin/python -m bench.scenarios.chat_turn_latency [--turns 200] [--conversations 10]

"Server time beyond baseline" = median(turn) - median(hello PATCH): what a turn costs
on top of an HTTP round trip with a JSON body. Design budget: <= 3 ms median beyond the
provider's own time (the offline provider's own time is measured in-process here).
"Beyond the floor" = median(turn) - median(floor turn): what the API adds to the same
SQL round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import OfflineProvider
from bench.harness.cli import scenario_main, step
from bench.harness.clients import SequentialClient
from bench.harness.report import Goal, Row, conclude
from bench.harness.session import BenchSession
from bench.harness.stats import summarize_ms
from bench.harness.workloads import numbered_message, sequential_setup

NAME = "chat_turn_latency"
BUDGET = Goal("app", "<=", 3.0, " ms")
HELLO_BODY = json.dumps({"personality": "witty"}).encode()


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


def run(args: argparse.Namespace) -> list[Row]:
    samples: dict[str, list[float]] = {"turn": [], "floor": [], "hello_get": [], "hello_patch": []}
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    reply_statuses: Counter[str] = Counter()

    with BenchSession(NAME) as session:
        setup = sequential_setup(
            session, ("turn", "floor"), args.conversations, hello=True, floor_window=args.floor_window
        )
        app, floor, hello, user = setup.app, setup.floor, setup.hello, setup.user
        assert hello is not None
        paths = {"turn": "/conversations/{}/messages", "floor": "/floor/conversations/{}/messages"}
        auth = {**user.headers, "Accept": "application/json"}
        clients = {"turn": SequentialClient(app.port), "floor": SequentialClient(floor.port)}
        hello_client = SequentialClient(hello.port)

        def turn(kind: str, conversation: str, i: int) -> None:
            status, body, seconds = clients[kind].request(
                "POST", paths[kind].format(conversation), numbered_message(i), auth
            )
            statuses[f"{kind} POST messages {status}"] += 1
            samples[kind].append(seconds)
            if status != 201:
                if len(failures) < 10:
                    failures.append(f"{kind} {i}: {status} {body[:300]!r}")
                return
            reply_statuses[f"{kind} {json.loads(body)['assistant_message']['status']}"] += 1

        try:
            with step(f"warm-up: {args.warmup_turns} turns each"):
                for i in range(args.warmup_turns):
                    hello_client.request("GET", "/hello")
                    hello_client.request("PATCH", "/hello", HELLO_BODY)
                    for kind in ("turn", "floor"):
                        clients[kind].request(
                            "POST", paths[kind].format(setup.warm[kind]), numbered_message(i), auth
                        )
            meter = session.cpu_meter([app, floor, hello])
            cpu_before = meter.snapshot()
            with step(f"{args.turns} sequential turns each over {args.conversations} conversations"):
                for i in range(args.turns):
                    for method, key, body in (
                        ("GET", "hello_get", None),
                        ("PATCH", "hello_patch", HELLO_BODY),
                    ):
                        status, _, seconds = hello_client.request(method, "/hello", body)
                        statuses[f"{method} /hello {status}"] += 1
                        samples[key].append(seconds)
                    order = ("turn", "floor") if i % 2 == 0 else ("floor", "turn")
                    for kind in order:
                        turn(kind, setup.rotation[kind][i % len(setup.rotation[kind])], i)
            cpu_after = meter.snapshot()
        finally:
            for client in (*clients.values(), hello_client):
                client.close()
        logs = session.server_log_report()

    provider = summarize_ms(offline_provider_seconds())
    turns = summarize_ms(samples["turn"])
    floor_turns = summarize_ms(samples["floor"])
    hello_get = summarize_ms(samples["hello_get"])
    hello_patch = summarize_ms(samples["hello_patch"])
    beyond = turns["p50_ms"] - hello_patch["p50_ms"]
    beyond_provider = beyond - provider["p50_ms"]
    beyond_floor = turns["p50_ms"] - floor_turns["p50_ms"]
    floor_beyond = floor_turns["p50_ms"] - hello_patch["p50_ms"] - provider["p50_ms"]
    cpu = {
        name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / max(1, args.turns) for name in cpu_after
    }

    def line(label: str, s: dict[str, float]) -> str:
        return (
            f"  {label:<30} median {s['p50_ms']:7.3f} ms   p90 {s['p90_ms']:7.3f} ms"
            f"   p99 {s['p99_ms']:7.3f} ms   max {s['max_ms']:7.3f} ms"
        )

    print()
    print(f"{NAME}: 1 worker each, offline provider (delay 0), {args.turns} sequential turns, JSON answers")
    print(line("POST .../messages (turn)", turns))
    print(line("floor POST .../messages", floor_turns))
    print(line("GET /hello (baseline)", hello_get))
    print(line("PATCH /hello (baseline)", hello_patch))
    print(line("offline provider in-process", provider))
    ratio = turns["p50_ms"] / hello_patch["p50_ms"]
    print(f"  server time beyond baseline = {beyond:.3f} ms median (turn / hello PATCH = {ratio:.1f}x)")
    print(
        f"  minus the provider's own {provider['p50_ms']:.3f} ms = {beyond_provider:.3f} ms"
        f" (design budget <= {BUDGET.value:g} ms; the floor's turn: {floor_beyond:.3f} ms)"
    )
    print(f"  turn time beyond the floor's turn = {beyond_floor:.3f} ms median")
    print("  CPU ms per iteration: " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
    print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    if reply_statuses:
        print("  reply status: " + ", ".join(f"{k}: {v}" for k, v in sorted(reply_statuses.items())))
    for failure in failures:
        print(f"  FAILED {failure}")

    note = f"{len(failures)} failed" if failures else ""
    rows = [
        Row(
            NAME,
            "turn median (hello: PATCH)",
            "ms",
            turns["p50_ms"],
            floor_turns["p50_ms"],
            hello_patch["p50_ms"],
        ),
        Row(
            NAME,
            "turn p90 (hello: PATCH)",
            "ms",
            turns["p90_ms"],
            floor_turns["p90_ms"],
            hello_patch["p90_ms"],
        ),
        Row(
            NAME,
            "server time beyond hello PATCH and provider",
            "ms",
            beyond_provider,
            floor_beyond,
            goal=BUDGET,
            note=note,
        ),
        Row(NAME, "turn time beyond the floor's turn", "ms", beyond_floor),
    ]
    data = {
        "turn": turns,
        "floor_turn": floor_turns,
        "hello_get": hello_get,
        "hello_patch": hello_patch,
        "offline_provider": provider,
        "beyond_baseline_ms": beyond,
        "beyond_baseline_and_provider_ms": beyond_provider,
        "beyond_floor_ms": beyond_floor,
        "cpu_ms_per_iteration": cpu,
        "statuses": dict(statuses),
        "reply_statuses": dict(reply_statuses),
        "failures": failures,
        "samples_ms": {key: [s * 1000 for s in values] for key, values in samples.items()},
    }
    return conclude(NAME, f"{NAME} (1 worker, sequential)", args, rows, data, logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
