"""Time to first byte of a streamed chat turn (`Accept: text/event-stream`), against the
database floor's stream, on one worker each, sequential.

One user with an avatar and `--conversations` conversations on each server; `--turns`
SSE sends to each, one at a time, interleaved (the order swapped every turn), over one
kept-alive connection per server from a raw-socket client that times the answer as it
arrives: its first byte (the status line: the API has saved the user message), the
first `delta` event (the reply has started) and the end of the stream (`done`: the
reply is saved). Offline provider without chunk delay. The floor
(`bench/apps/floor.py`) streams the same events after the same two round trips.

    .venv/bin/python -m bench.scenarios.sse_ttfb [--turns 200] [--conversations 10]

Reports median and p90 of each time for both, and app/floor.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from bench.harness.cli import scenario_main, step
from bench.harness.clients import StreamingClient
from bench.harness.report import Row, conclude
from bench.harness.session import BenchSession
from bench.harness.stats import summarize_ms
from bench.harness.workloads import numbered_message, sequential_setup

NAME = "sse_ttfb"
PATHS = {"app": "/conversations/{}/messages", "floor": "/floor/conversations/{}/messages"}
TIMES = {"first_byte": "first byte", "first_delta": "first delta", "done": "whole stream"}


def _print_stats(
    args: argparse.Namespace,
    stats: dict[str, dict[str, dict[str, float]]],
    statuses: Counter[str],
    failures: list[str],
) -> None:
    print()
    print(f"sse_ttfb: 1 worker each, offline provider (delay 0), {args.turns} sequential SSE turns each")
    for kind, label in (("app", "POST .../messages"), ("floor", "floor POST .../messages")):
        for t, what in TIMES.items():
            s = stats[kind][t]
            print(
                f"  {label + ', ' + what:<40} median {s['p50_ms']:7.3f} ms   p90 {s['p90_ms']:7.3f} ms"
                f"   p99 {s['p99_ms']:7.3f} ms"
            )
    print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    for failure in failures:
        print(f"  FAILED {failure}")


def run(args: argparse.Namespace) -> list[Row]:
    samples: dict[str, dict[str, list[float]]] = {kind: {t: [] for t in TIMES} for kind in PATHS}
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    with BenchSession(NAME) as session:
        setup = sequential_setup(
            session, tuple(PATHS), args.conversations, hello=False, floor_window=args.floor_window
        )
        warm, rotation = setup.warm, setup.rotation
        headers = {**setup.user.headers, "Accept": "text/event-stream"}
        clients = {"app": StreamingClient(setup.app.port), "floor": StreamingClient(setup.floor.port)}

        def send(kind: str, conversation: str, i: int, record: bool) -> None:
            timing = clients[kind].request(
                "POST", PATHS[kind].format(conversation), numbered_message(i), headers, b"event: delta"
            )
            complete = timing.status == 201 and b"event: done" in timing.body
            if not record:
                return
            statuses[f"{kind} {timing.status}{'' if complete else ' without done'}"] += 1
            if not complete or timing.marker_s is None:
                if len(failures) < 10:
                    failures.append(f"{kind} {i}: {timing.status} {timing.body[-300:]!r}")
                return
            samples[kind]["first_byte"].append(timing.first_byte_s)
            samples[kind]["first_delta"].append(timing.marker_s)
            samples[kind]["done"].append(timing.total_s)

        try:
            with step(f"warm-up: {args.warmup_turns} SSE turns each"):
                for i in range(args.warmup_turns):
                    for kind in PATHS:
                        send(kind, warm[kind], i, record=False)
            with step(f"{args.turns} sequential SSE turns each over {args.conversations} conversations"):
                for i in range(args.turns):
                    for kind in ("app", "floor") if i % 2 == 0 else ("floor", "app"):
                        send(kind, rotation[kind][i % len(rotation[kind])], i, record=True)
        finally:
            for client in clients.values():
                client.close()
        logs = session.server_log_report()

    stats = {kind: {t: summarize_ms(v) for t, v in times.items()} for kind, times in samples.items()}
    _print_stats(args, stats, statuses, failures)
    note = f"{len(failures)} failed" if failures else ""
    rows = [
        Row(NAME, f"SSE {what} {pct}", "ms", stats["app"][t][key], stats["floor"][t][key], note=note)
        for t, what in TIMES.items()
        for pct, key in (("median", "p50_ms"), ("p90", "p90_ms"))
    ]
    data = {"stats": stats, "statuses": dict(statuses), "failures": failures}
    return conclude(NAME, f"{NAME} (1 worker, sequential)", args, rows, data, logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
