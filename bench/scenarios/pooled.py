"""Direct vs through pgbouncer in transaction mode (what Supabase's transaction pooler,
Supavisor on port 6543, does to the connections): the persona_patch and chat_turn_throughput
workloads on the API and on the database floor, each connected both ways, in one run.

A real pgbouncer (`tests.support.pooler.PgBouncer`, `pool_mode = transaction`, `--pool-size`
server connections) in front of the same Postgres. Four servers with `--workers` (3)
workers each: the API direct, the API with `DATABASE_URL=<pgbouncer>` and
`DB_POOL_MODE=transaction` (no prepared statement cache), the floor direct and the floor
through pgbouncer (`statement_cache_size=0`). Each is loaded in turn with the same wrk
client (PATCH: `--connections`, chat turns: `--turn-connections`), the order
alternating over `--rounds`. Every server has conversations of its own.

    .venv/bin/python -m bench.scenarios.pooled [--pool-size 10] [--workers 3] [--seconds 5]

Reports, per workload, app/floor direct and through pgbouncer (the same targets as
persona_patch and chat_turn_throughput), and pooled/direct of the API and of the floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.factories import User

from bench.harness.cli import scenario_main, step
from bench.harness.database import avatar_versions, message_counts, replies_line, versions_line
from bench.harness.load import RequestSet
from bench.harness.report import Goal, Row, conclude, load_note
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, Target, load_client, measure, print_rounds
from bench.harness.users import avatars_and_conversations, users_in_database
from bench.harness.workloads import (
    Kind,
    check_once,
    persona_answer_ok,
    persona_requests,
    turn_answer_ok,
    turn_requests,
)

NAME = "pooled"
KEYS: tuple[tuple[str, Kind], ...] = (
    ("app", "app"),
    ("floor", "floor"),
    ("app_pooled", "app"),
    ("floor_pooled", "floor"),
)
LABELS = {
    "app": "API direct",
    "floor": "floor direct",
    "app_pooled": "API via pgbouncer",
    "floor_pooled": "floor via pgbouncer",
}


def rows_for(label: str, measured: Measured, goal: Goal, unit: str) -> list[Row]:
    total = {key: measured.total(key) for key, _ in KEYS}
    note = load_note(*total.values())
    return [
        Row(NAME, f"{label} direct", unit, total["app"].rps, total["floor"].rps, goal=goal, note=note),
        Row(
            NAME,
            f"{label} via pgbouncer",
            unit,
            total["app_pooled"].rps,
            total["floor_pooled"].rps,
            goal=goal,
        ),
        Row(
            NAME, f"{label} p50 via pgbouncer", "ms", total["app_pooled"].p50_ms, total["floor_pooled"].p50_ms
        ),
        Row(
            NAME,
            f"{label} pgbouncer/direct",
            "x",
            total["app_pooled"].rps / total["app"].rps,
            total["floor_pooled"].rps / total["floor"].rps,
        ),
    ]


def _start_servers(session: BenchSession, args: argparse.Namespace, pooled_dsn: str) -> dict[str, Server]:
    with step(f"servers ({args.workers} worker(s) each): API and floor, direct and via pgbouncer"):
        pooled_env = {"DATABASE_URL": pooled_dsn, "DB_POOL_MODE": "transaction"}
        return {
            "app": session.start_app(workers=args.workers),
            "floor": session.start_floor(workers=args.workers, window=args.floor_window),
            "app_pooled": session.start_app(workers=args.workers, env=pooled_env, name="avatar-chat-pooled"),
            "floor_pooled": session.start_floor(
                window=args.floor_window,
                workers=args.workers,
                dsn=pooled_dsn,
                statement_cache_size=0,
                name="floor-pooled",
            ),
        }


@dataclass
class _Runs:
    patch: Measured
    turns: Measured
    increments: int  # how far the avatars' versions advanced while measuring
    before: dict[str, dict[str, int]]  # per server, its conversations' messages by status
    after: dict[str, dict[str, int]]
    logs: dict[str, list[str]]
    pooler_log: list[str]  # pgbouncer's warnings and errors


def _measure(session: BenchSession, args: argparse.Namespace, client: str) -> _Runs:
    dsn, users = users_in_database(session, args.users)
    with step(f"pgbouncer (transaction mode, {args.pool_size} server connections)"):
        pooler = session.pooler(args.pool_size)
    servers = _start_servers(session, args, pooler.dsn)
    conversations = avatars_and_conversations(servers["app"].base_url, users, len(KEYS))
    convs = {key: [c[i] for c in conversations] for i, (key, _) in enumerate(KEYS)}

    def targets(requests: Callable[[Kind, list[User], str], RequestSet]) -> list[Target]:
        return [Target(key, LABELS[key], servers[key], requests(kind, users, key)) for key, kind in KEYS]

    patch = targets(lambda kind, us, _key: persona_requests(kind, us))
    turns = targets(lambda kind, us, key: turn_requests(kind, us, convs[key]))
    with step("a first PATCH and turn each"):
        version_before = avatar_versions(dsn, users)
        checked = sum(check_once(t.server, t.requests, 200, persona_answer_ok) for t in patch)
        for target in turns:
            check_once(target.server, target.requests, 201, turn_answer_ok)
        before = {key: message_counts(dsn, ids) for key, ids in convs.items()}
    measured_patch = measure(
        session, f"{NAME}-patch", patch, args, connections=args.connections, client=client
    )
    measured_turns = measure(
        session,
        f"{NAME}-turns",
        turns,
        args,
        connections=args.turn_connections,
        client=client,
        affinity=True,  # one connection per user, as in chat_turn_throughput
    )
    time.sleep(1.0)  # requests in flight when wrk stopped are answered by now
    increments = avatar_versions(dsn, users) - version_before - checked
    after = {key: message_counts(dsn, ids) for key, ids in convs.items()}
    logs = session.server_log_report()
    pooler_log = [line for line in pooler.log().splitlines() if " WARNING " in line or " ERROR " in line]
    return _Runs(measured_patch, measured_turns, increments, before, after, logs, pooler_log)


def _print_runs(args: argparse.Namespace, runs: _Runs) -> None:
    """Each round's figures, then what the database and pgbouncer's log say."""
    print()
    print(
        f"pooled: {args.workers} worker(s) each, pgbouncer transaction mode with {args.pool_size} server"
        f" connections, {args.seconds:g} s x {args.rounds} round(s), {args.users} users"
    )
    ratios = [
        ("app", "floor"),
        ("app_pooled", "floor_pooled"),
        ("app_pooled", "app"),
        ("floor_pooled", "floor"),
    ]
    print(f"  PATCH persona, {args.connections} connections")
    print_rounds(runs.patch, ratios)
    print(f"  chat turns, {args.turn_connections} connections")
    print_rounds(runs.turns, ratios)
    ok = sum(runs.patch.ok(key) for key, _ in KEYS)
    slack = args.connections * sum(runs.patch.run_count(key) for key, _ in KEYS)
    print(versions_line(", PATCH", runs.increments, ok, slack))
    for key, _ in KEYS:
        slack = args.turn_connections * runs.turns.run_count(key)
        print(replies_line(LABELS[key], runs.before[key], runs.after[key], runs.turns.ok(key), slack))
    if runs.pooler_log:
        first = runs.pooler_log[0][:200]
        print(f"  pgbouncer log: {len(runs.pooler_log)} warning/error line(s); first: {first}")


def run(args: argparse.Namespace) -> list[Row]:
    client = load_client(args, python_fallback=False)
    with BenchSession(NAME) as session:
        runs = _measure(session, args, client)
    _print_runs(args, runs)
    rows = [
        *rows_for("PATCH persona", runs.patch, Goal("app/floor", ">=", 0.85), "req/s"),
        *rows_for("chat turn", runs.turns, Goal("app/floor", ">=", 0.7), "turns/s"),
    ]
    data = {
        "patch": runs.patch.as_json(),
        "turns": runs.turns.as_json(),
        "db_version_increments": runs.increments,
        "messages_before": runs.before,
        "messages_after": runs.after,
        "pgbouncer_log": runs.pooler_log[:200],
    }
    title = f"{NAME} ({args.workers} workers, pgbouncer pool {args.pool_size})"
    return conclude(NAME, title, args, rows, data, runs.logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
