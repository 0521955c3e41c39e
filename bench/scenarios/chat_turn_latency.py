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
from dataclasses import dataclass, field

from avatar_chat.avatars.persona import AvatarSnapshot
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import OfflineProvider
from bench.harness.cli import scenario_main, step
from bench.harness.clients import SequentialClient
from bench.harness.report import Goal, Row, conclude
from bench.harness.session import BenchSession
from bench.harness.stats import summarize_ms
from bench.harness.workloads import Sequential, numbered_message, sequential_setup

NAME = "chat_turn_latency"
BUDGET = Goal("app", "<=", 3.0, " ms")
HELLO_BODY = json.dumps({"personality": "witty"}).encode()
PATHS = {"turn": "/conversations/{}/messages", "floor": "/floor/conversations/{}/messages"}


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


@dataclass
class _Recorded:
    """What the sequential requests recorded: seconds per kind of request, answer codes,
    reply statuses, the first failures, CPU ms per iteration of every process tree."""

    samples: dict[str, list[float]] = field(
        default_factory=lambda: {"turn": [], "floor": [], "hello_get": [], "hello_patch": []}
    )
    statuses: Counter[str] = field(default_factory=Counter)
    reply_statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


class _Driver:
    """One kept-alive connection to each server, sending a turn or the hello pair at a time."""

    def __init__(self, setup: Sequential, recorded: _Recorded) -> None:
        assert setup.hello is not None
        self.setup = setup
        self.recorded = recorded
        self.auth = {**setup.user.headers, "Accept": "application/json"}
        self.clients = {"turn": SequentialClient(setup.app.port), "floor": SequentialClient(setup.floor.port)}
        self.hello = setup.hello
        self.hello_client = SequentialClient(setup.hello.port)

    def send(self, kind: str, conversation: str, i: int) -> tuple[int, bytes, float]:
        return self.clients[kind].request(
            "POST", PATHS[kind].format(conversation), numbered_message(i), self.auth
        )

    def warm_up(self, turns: int) -> None:
        for i in range(turns):
            self.hello_client.request("GET", "/hello")
            self.hello_client.request("PATCH", "/hello", HELLO_BODY)
            for kind in ("turn", "floor"):
                self.send(kind, self.setup.warm[kind], i)

    def iteration(self, i: int) -> None:
        """GET and PATCH /hello, then a turn to each, the order swapped every iteration."""
        recorded = self.recorded
        for method, key, body in (("GET", "hello_get", None), ("PATCH", "hello_patch", HELLO_BODY)):
            status, _, seconds = self.hello_client.request(method, "/hello", body)
            recorded.statuses[f"{method} /hello {status}"] += 1
            recorded.samples[key].append(seconds)
        for kind in ("turn", "floor") if i % 2 == 0 else ("floor", "turn"):
            rotation = self.setup.rotation[kind]
            status, answer, seconds = self.send(kind, rotation[i % len(rotation)], i)
            recorded.statuses[f"{kind} POST messages {status}"] += 1
            recorded.samples[kind].append(seconds)
            if status != 201:
                if len(recorded.failures) < 10:
                    recorded.failures.append(f"{kind} {i}: {status} {answer[:300]!r}")
                continue
            recorded.reply_statuses[f"{kind} {json.loads(answer)['assistant_message']['status']}"] += 1

    def close(self) -> None:
        for client in (*self.clients.values(), self.hello_client):
            client.close()


def _measure(session: BenchSession, args: argparse.Namespace) -> tuple[_Recorded, dict[str, list[str]]]:
    setup = sequential_setup(
        session, ("turn", "floor"), args.conversations, hello=True, floor_window=args.floor_window
    )
    recorded = _Recorded()
    driver = _Driver(setup, recorded)
    try:
        with step(f"warm-up: {args.warmup_turns} turns each"):
            driver.warm_up(args.warmup_turns)
        meter = session.cpu_meter([setup.app, setup.floor, driver.hello])
        cpu_before = meter.snapshot()
        with step(f"{args.turns} sequential turns each over {args.conversations} conversations"):
            for i in range(args.turns):
                driver.iteration(i)
        cpu_after = meter.snapshot()
    finally:
        driver.close()
    recorded.cpu = {
        name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / max(1, args.turns) for name in cpu_after
    }
    return recorded, session.server_log_report()


@dataclass(frozen=True)
class _Figures:
    turn: dict[str, float]  # latency summaries (ms)
    floor_turn: dict[str, float]
    hello_get: dict[str, float]
    hello_patch: dict[str, float]
    provider: dict[str, float]  # the offline provider's own time, in-process

    @property
    def beyond(self) -> float:
        """Median turn beyond a hello PATCH."""
        return self.turn["p50_ms"] - self.hello_patch["p50_ms"]

    @property
    def beyond_provider(self) -> float:
        """... and beyond the provider's own time: what the design budget bounds."""
        return self.beyond - self.provider["p50_ms"]

    @property
    def beyond_floor(self) -> float:
        return self.turn["p50_ms"] - self.floor_turn["p50_ms"]

    @property
    def floor_beyond(self) -> float:
        """The floor's turn beyond a hello PATCH and the provider."""
        return self.floor_turn["p50_ms"] - self.hello_patch["p50_ms"] - self.provider["p50_ms"]


def _line(label: str, s: dict[str, float]) -> str:
    return (
        f"  {label:<30} median {s['p50_ms']:7.3f} ms   p90 {s['p90_ms']:7.3f} ms"
        f"   p99 {s['p99_ms']:7.3f} ms   max {s['max_ms']:7.3f} ms"
    )


def _print_figures(args: argparse.Namespace, figures: _Figures, recorded: _Recorded) -> None:
    print()
    print(f"{NAME}: 1 worker each, offline provider (delay 0), {args.turns} sequential turns, JSON answers")
    print(_line("POST .../messages (turn)", figures.turn))
    print(_line("floor POST .../messages", figures.floor_turn))
    print(_line("GET /hello (baseline)", figures.hello_get))
    print(_line("PATCH /hello (baseline)", figures.hello_patch))
    print(_line("offline provider in-process", figures.provider))
    ratio = figures.turn["p50_ms"] / figures.hello_patch["p50_ms"]
    print(
        f"  server time beyond baseline = {figures.beyond:.3f} ms median (turn / hello PATCH = {ratio:.1f}x)"
    )
    print(
        f"  minus the provider's own {figures.provider['p50_ms']:.3f} ms = {figures.beyond_provider:.3f} ms"
        f" (design budget <= {BUDGET.value:g} ms; the floor's turn: {figures.floor_beyond:.3f} ms)"
    )
    print(f"  turn time beyond the floor's turn = {figures.beyond_floor:.3f} ms median")
    print("  CPU ms per iteration: " + ", ".join(f"{k} {v:.3f}" for k, v in recorded.cpu.items()))
    print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(recorded.statuses.items())))
    if recorded.reply_statuses:
        print("  reply status: " + ", ".join(f"{k}: {v}" for k, v in sorted(recorded.reply_statuses.items())))
    for failure in recorded.failures:
        print(f"  FAILED {failure}")


def _rows(figures: _Figures, failures: list[str]) -> list[Row]:
    turn, floor, hello = figures.turn, figures.floor_turn, figures.hello_patch
    return [
        Row(NAME, "turn median (hello: PATCH)", "ms", turn["p50_ms"], floor["p50_ms"], hello["p50_ms"]),
        Row(NAME, "turn p90 (hello: PATCH)", "ms", turn["p90_ms"], floor["p90_ms"], hello["p90_ms"]),
        Row(
            NAME,
            "server time beyond hello PATCH and provider",
            "ms",
            figures.beyond_provider,
            figures.floor_beyond,
            goal=BUDGET,
            note=f"{len(failures)} failed" if failures else "",
        ),
        Row(NAME, "turn time beyond the floor's turn", "ms", figures.beyond_floor),
    ]


def run(args: argparse.Namespace) -> list[Row]:
    with BenchSession(NAME) as session:
        recorded, logs = _measure(session, args)
    samples = recorded.samples
    figures = _Figures(
        turn=summarize_ms(samples["turn"]),
        floor_turn=summarize_ms(samples["floor"]),
        hello_get=summarize_ms(samples["hello_get"]),
        hello_patch=summarize_ms(samples["hello_patch"]),
        provider=summarize_ms(offline_provider_seconds()),
    )
    _print_figures(args, figures, recorded)
    data = {
        "turn": figures.turn,
        "floor_turn": figures.floor_turn,
        "hello_get": figures.hello_get,
        "hello_patch": figures.hello_patch,
        "offline_provider": figures.provider,
        "beyond_baseline_ms": figures.beyond,
        "beyond_baseline_and_provider_ms": figures.beyond_provider,
        "beyond_floor_ms": figures.beyond_floor,
        "cpu_ms_per_iteration": recorded.cpu,
        "statuses": dict(recorded.statuses),
        "reply_statuses": dict(recorded.reply_statuses),
        "failures": recorded.failures,
        "samples_ms": {key: [s * 1000 for s in values] for key, values in samples.items()},
    }
    return conclude(
        NAME, f"{NAME} (1 worker, sequential)", args, _rows(figures, recorded.failures), data, logs
    )


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
