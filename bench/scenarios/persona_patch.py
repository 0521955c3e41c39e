"""Throughput of `PATCH /avatars/me/persona` against its database floor and hello world.

Three servers side by side with the same worker count (`--workers`, 3): the API, the
database floor (`bench/apps/floor.py`: `PATCH /floor/persona`, the same UPDATE ...
RETURNING in one round trip with no token check, no RLS, no cache) and hello world
(`PATCH /hello`). Each is loaded in turn by the same closed-loop client (wrk, or
`bench.harness.loadgen` without it) with `--connections` (32) for `--seconds` per round, the
order alternating over `--rounds`. Every request comes from a random one of `--users`
(64) users (so no two requests fight over one row), personalities alternating, no
If-Match; all three get the same headers and body (the floor reads `X-User-Id`).

    .venv/bin/python -m bench.scenarios.persona_patch [--workers 3] [--seconds 5] [--rounds 2]

Reports requests/s and latency p50/p99 of each, and app/floor (design target >= 0.85x)
and app/hello.
"""

from __future__ import annotations

import argparse
import sys

from bench.harness.cli import scenario_main, step
from bench.harness.database import avatar_versions, versions_line
from bench.harness.report import Goal, Row, conclude, throughput_rows
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, load_client, measure, print_rounds, tool_name
from bench.harness.workloads import (
    PERSONA_LABELS,
    check_once,
    persona_answer_ok,
    persona_requests,
    users_and_servers,
)

NAME = "persona_patch"
GOAL = Goal("app/floor", ">=", 0.85)


def _measure(
    session: BenchSession, args: argparse.Namespace, client: str
) -> tuple[Measured, int, dict[str, list[str]]]:
    """The rounds, how far the avatars' versions advanced while they ran, the servers' logs."""
    setup = users_and_servers(session, args)
    targets = setup.targets(PERSONA_LABELS, lambda kind: persona_requests(kind, setup.users))
    with step("a first PATCH each"):
        version_before = avatar_versions(setup.dsn, setup.users)
        checked = sum(check_once(t.server, t.requests, 200, persona_answer_ok) for t in targets[1:])
        check_once(setup.hello, targets[0].requests, 200, persona_answer_ok)
    measured = measure(session, NAME, targets, args, connections=args.connections, client=client)
    increments = avatar_versions(setup.dsn, setup.users) - version_before - checked
    return measured, increments, session.server_log_report()


def run(args: argparse.Namespace) -> list[Row]:
    client = load_client(args, python_fallback=True)
    with BenchSession(NAME) as session:
        measured, increments, logs = _measure(session, args, client)

    ok = measured.ok("app") + measured.ok("floor")
    slack = args.connections * (measured.run_count("app") + measured.run_count("floor"))
    print()
    print(
        f"persona_patch: {args.workers} worker(s) each, {args.connections} connections,"
        f" {args.seconds:g} s x {args.rounds} round(s), {args.users} users, client {tool_name(client)}"
    )
    print_rounds(measured, [("app", "floor"), ("app", "hello")])
    print(versions_line("", increments, ok, slack, whose=" of the API and the floor"))
    if client == "python":
        print("  note: the Python client may saturate before hello world does; that flatters the ratios")
    rows = throughput_rows(
        NAME,
        "PATCH persona",
        measured.total("app"),
        measured.total("floor"),
        measured.total("hello"),
        GOAL,
    )
    data = {"runs": measured.as_json(), "db_version_increments": increments, "counted_2xx": ok}
    title = f"{NAME} ({args.workers} workers, {tool_name(client)} -c{args.connections})"
    return conclude(NAME, title, args, rows, data, logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
