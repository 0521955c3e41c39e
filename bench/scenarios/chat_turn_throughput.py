"""Throughput of concurrent chat turns (`POST /conversations/{id}/messages`, JSON answer)
against their database floor and hello world.

`--users` (64) users, each with an avatar and one conversation per server. The API runs
with the offline provider and no chunk delay, rate limits off; the database floor
(`bench/apps/floor.py`) makes the same two round trips on the same tables and triggers
(user message and `streaming` placeholder in one call, then the reply settled as
`complete`) with no token check, no RLS, no cache; hello world (`POST /hello/turn`)
echoes the body as an exchange of the same shape. Same worker count (`--workers`, 3),
same client (wrk), `--turn-connections` (64) connections, each request a random user's
conversation, message texts alternating, no Idempotency-Key; the order alternates over
`--rounds`.

    .venv/bin/python -m bench.scenarios.chat_turn_throughput [--workers 3] [--turn-connections 64]

Reports turns/s and latency p50/p99 of each, app/floor (design target >= 0.7x) and
app/hello. wrk counts answers that are not 2xx; afterwards the database must hold one
complete reply and one user message per 2xx answer counted (a few more: requests still in
flight when a run ended).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from bench.harness.cli import scenario_main, step
from bench.harness.database import message_counts, replies_line
from bench.harness.report import Goal, Row, conclude, throughput_rows
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, load_client, measure, print_rounds
from bench.harness.users import create_conversations
from bench.harness.workloads import TURN_LABELS, check_once, turn_answer_ok, turn_requests, users_and_servers

NAME = "chat_turn_throughput"
GOAL = Goal("app/floor", ">=", 0.7)


@dataclass
class _Runs:
    measured: Measured
    before: dict[str, dict[str, int]]  # per server, its conversations' messages by status
    after: dict[str, dict[str, int]]
    logs: dict[str, list[str]]


def _measure(session: BenchSession, args: argparse.Namespace, client: str) -> _Runs:
    setup = users_and_servers(session, args)
    dsn, users = setup.dsn, setup.users
    with step("two conversations each (the API's, the floor's)"):
        conversations = create_conversations(setup.app.base_url, users, 2)
    convs = {"app": [c[0] for c in conversations], "floor": [c[1] for c in conversations]}
    # hello echoes the API's conversation ids; the floor writes to conversations of its own
    targets = setup.targets(
        TURN_LABELS, lambda kind: turn_requests(kind, users, convs["floor" if kind == "floor" else "app"])
    )
    with step("a first turn each"):
        for target in targets:
            check_once(target.server, target.requests, 201, turn_answer_ok)
        before = {key: message_counts(dsn, ids) for key, ids in convs.items()}
    # 64 concurrent users: each connection is one user, one send at a time (as an app).
    measured = measure(
        session, NAME, targets, args, connections=args.turn_connections, client=client, affinity=True
    )
    time.sleep(1.0)  # requests in flight when wrk stopped are answered by now
    after = {key: message_counts(dsn, ids) for key, ids in convs.items()}
    return _Runs(measured, before, after, session.server_log_report())


def run(args: argparse.Namespace) -> list[Row]:
    client = load_client(args, python_fallback=False)
    with BenchSession(NAME) as session:
        runs = _measure(session, args, client)
    measured, before, after = runs.measured, runs.before, runs.after

    print()
    print(
        f"{NAME}: {args.workers} worker(s) each, {args.turn_connections} connections,"
        f" {args.seconds:g} s x {args.rounds} round(s), {args.users} users, offline provider (no delay)"
    )
    print_rounds(measured, [("app", "floor"), ("app", "hello")])
    for key in ("app", "floor"):
        slack = args.turn_connections * measured.run_count(key)
        print(replies_line(key, before[key], after[key], measured.ok(key), slack))
    rows = throughput_rows(
        NAME,
        "chat turn",
        measured.total("app"),
        measured.total("floor"),
        measured.total("hello"),
        GOAL,
        unit="turns/s",
    )
    data = {"runs": measured.as_json(), "messages_before": before, "messages_after": after}
    title = f"{NAME} ({args.workers} workers, wrk -c{args.turn_connections})"
    return conclude(NAME, title, args, rows, data, runs.logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
