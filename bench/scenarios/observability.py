"""What request ids, the access log check and Prometheus metrics cost a persona switch and
a chat turn: the API three times in the same run, rounds alternating.

- `on`: `avatar-chat serve` as deployed (METRICS_ENABLED=true, multiprocess metrics files);
- `off`: the same with METRICS_ENABLED=false (request ids and the access-log check stay,
  nothing is recorded);
- `bare`: the API without its outermost layer at all (`bench/apps/bare.py`: no request ids,
  no access log, no metrics), under uvicorn with the same server settings.

Same users and avatars, each server its own conversations; the `persona_patch` workload
(wrk `--connections`) and the `chat_turn_throughput` workload (wrk `--turn-connections`, a user per
connection), `--workers` workers each, `--seconds` x `--rounds` after `--warmup`. Reports
throughput and the API's CPU per request of each, `on/bare` (design budget: metrics and
request ids together cost at most 5%, so >= 0.95x) and `on/off`; afterwards the `on`
server's /metrics must count the requests wrk got answers to (`MISMATCH` otherwise).

On 2 shared cores throughput swings by more than 5% between runs of one server, so the
budget is also checked against a quieter figure of the same run: `bench.probes.layer_cost`
(in-process, in multiprocess mode) times the outer layer with and without metrics and
what a turn or a switch records besides, and that is set against the bare server's API
CPU per request (`added by metrics + ids / bare API CPU`, target <= 0.05).

    .venv/bin/python -m bench.scenarios.observability [--workers 3] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.support.factories import User

from bench.harness.cli import scenario_main, step
from bench.harness.report import Goal, Row, conclude, load_note
from bench.harness.servers import APP_ENV, Server
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, Target, load_client, measure, print_rounds, tool_name
from bench.harness.users import avatars_and_conversations, users_in_database
from bench.harness.workloads import (
    check_once,
    persona_answer_ok,
    persona_requests,
    turn_answer_ok,
    turn_requests,
)

NAME = "observability"
SERVERS = {"on": "metrics-on", "off": "metrics-off", "bare": "bare"}
GOAL = Goal("app/floor", ">=", 0.95)
COST = Goal("app/floor", "<=", 0.05)
PERSONA_ROUTE = ("PATCH", "/avatars/me/persona", "200")
TURN_ROUTE = ("POST", "/conversations/{conversation_id}/messages", "201")


def _counted(server: Server, route: tuple[str, str, str]) -> float:
    """Requests of `route` the server's /metrics counts (all workers)."""
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = (sample.labels.get("method"), sample.labels.get("route"), sample.labels.get("status"))
            if sample.name == "avatar_chat_http_request_duration_seconds_count" and labels == route:
                return float(sample.value)
    return 0.0


def _layer_cost(folder: Path) -> dict[str, Any]:
    """bench.probes.layer_cost in a process of its own, in multiprocess mode as serve runs the API."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.probes.layer_cost"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _start_bare(session: BenchSession, workers: int) -> Server:
    env = {
        **APP_ENV,
        "DATABASE_URL": session.dsn,
        "SUPABASE_JWT_SECRET": session.jwt_secret,
        "DATA_DIR": str(session.tmp / "bare-data"),
        "METRICS_ENABLED": "false",
    }
    return session.start_uvicorn(SERVERS["bare"], "bench.apps.bare:app", workers, env, "/ready")


def _workload(
    session: BenchSession,
    args: argparse.Namespace,
    label: str,
    targets: list[Target],
    connections: int,
    client: str,
    *,
    affinity: bool,
) -> Measured:
    print(f"\n  {label}")
    return measure(
        session, f"{NAME}-{label}", targets, args, connections=connections, client=client, affinity=affinity
    )


def _start_servers(session: BenchSession, workers: int) -> dict[str, Server]:
    with step(f"three API servers ({workers} worker(s) each): metrics on, off, bare"):
        return {
            "on": session.start_app(workers=workers, env={"METRICS_ENABLED": "true"}, name=SERVERS["on"]),
            "off": session.start_app(workers=workers, env={"METRICS_ENABLED": "false"}, name=SERVERS["off"]),
            "bare": _start_bare(session, workers),
        }


def _targets(
    servers: dict[str, Server], users: list[User], conversations: list[list[str]]
) -> tuple[list[Target], list[Target]]:
    """The persona_patch and the chat_turn_throughput workload on each server, each
    user's first request sent once."""
    patch_targets = [
        Target(key, f"PATCH persona, {key}", server, persona_requests("app", users))
        for key, server in servers.items()
    ]
    turn_targets = [
        Target(key, f"chat turn, {key}", server, turn_requests("app", users, [c[i] for c in conversations]))
        for i, (key, server) in enumerate(servers.items())
    ]
    for target in patch_targets:
        check_once(target.server, target.requests, 200, persona_answer_ok)
    for target in turn_targets:
        check_once(target.server, target.requests, 201, turn_answer_ok)
    return patch_targets, turn_targets


@dataclass
class _Runs:
    patches: Measured
    turns: Measured
    counted: dict[tuple[str, str, str], float]  # by route, what /metrics of `on` counted
    layer: dict[str, Any]  # bench.probes.layer_cost's figures
    logs: dict[str, list[str]]


def _measure(session: BenchSession, args: argparse.Namespace, client: str) -> _Runs:
    _, users = users_in_database(session, args.users)
    servers = _start_servers(session, args.workers)
    conversations = avatars_and_conversations(servers["on"].base_url, users, len(servers))
    patch_targets, turn_targets = _targets(servers, users, conversations)
    before = {route: _counted(servers["on"], route) for route in (PERSONA_ROUTE, TURN_ROUTE)}
    patches = _workload(
        session, args, "persona_patch", patch_targets, args.connections, client, affinity=False
    )
    turns = _workload(
        session, args, "chat_turn_throughput", turn_targets, args.turn_connections, client, affinity=True
    )
    time.sleep(1.0)  # requests in flight when wrk stopped are answered and recorded by now
    counted = {route: _counted(servers["on"], route) - before[route] for route in before}
    logs = session.server_log_report()
    with step("the outer layer alone, in-process (bench.probes.layer_cost)"):
        layer = _layer_cost(session.tmp / "layer-metrics")
    return _Runs(patches, turns, counted, layer, logs)


def _workload_rows(
    label: str, measured: Measured, route: tuple[str, str, str], unit: str, counted: float, connections: int
) -> list[Row]:
    """One workload's rounds, its /metrics check and its rows."""
    print(f"  {label}")
    print_rounds(measured, [("on", "bare"), ("on", "off"), ("off", "bare")])
    ok = measured.ok("on")
    slack = connections * measured.run_count("on")
    fine = ok <= counted <= ok + slack
    print(
        f"  /metrics of `on` counted {counted:.0f} {' '.join(route)} for {ok} 2xx answers"
        f" wrk got (up to {slack} more in flight at the ends of runs)" + ("" if fine else "  <-- MISMATCH")
    )
    total = {key: measured.total(key) for key in SERVERS}
    cpu = {key: measured.cpu_ms(key, SERVERS[key]) for key in SERVERS}
    rounds = statistics.median(
        on.rps / bare.rps for on, bare in zip(measured.runs["on"], measured.runs["bare"], strict=True)
    )
    note = f"median round {rounds:.3f}x; {load_note(*total.values())}" + ("" if fine else " metrics MISMATCH")
    return [
        Row(
            NAME,
            f"{label} throughput: on / bare",
            unit,
            total["on"].rps,
            total["bare"].rps,
            goal=GOAL,
            note=note.strip("; "),
        ),
        Row(NAME, f"{label} throughput: on / off", unit, total["on"].rps, total["off"].rps),
        Row(NAME, f"{label} API CPU per request: on / bare", "ms", cpu["on"], cpu["bare"]),
        Row(NAME, f"{label} API CPU per request: off / bare", "ms", cpu["off"], cpu["bare"]),
        Row(NAME, f"{label} p50: on / bare", "ms", total["on"].p50_ms, total["bare"].p50_ms),
    ]


def _layer_rows(layer: dict[str, Any], patches: Measured, turns: Measured) -> list[Row]:
    """The outer layer timed in-process, and what it and a request's recordings add, set
    against the bare server's API CPU per request of the same run."""
    us = layer["us_per_request"]
    print(
        f"  the outer layer alone, us per request: bare {us['bare']:.2f}, metrics off {us['off']:.2f},"
        f" metrics on {us['on']:.2f} (multiprocess files: {layer['multiprocess']})"
    )
    rows = [
        Row(NAME, "outer layer per request (in-process): on / bare", "us", us["on"], us["bare"]),
        Row(NAME, "outer layer per request (in-process): off / bare", "us", us["off"], us["bare"]),
    ]
    # The same-run estimate the budget is checked against: what the layer and the recordings
    # of a request add (in-process, no noise from the shared cores), over the API CPU the
    # request costs without any of it (the bare server, measured above).
    for label, measured, recordings in (
        ("PATCH persona", patches, layer["us_per_patch_recordings"]),
        ("chat turn", turns, layer["us_per_turn_recordings"]),
    ):
        added = us["on"] - us["bare"] + recordings
        bare_cpu_us = measured.cpu_ms("bare", SERVERS["bare"]) * 1000
        print(
            f"  {label}: metrics and request ids add {added:.1f} us of API CPU to {bare_cpu_us:.0f} us"
            f" ({added / bare_cpu_us:.1%})"
        )
        rows.append(
            Row(NAME, f"{label}: added by metrics + ids / bare API CPU", "us", added, bare_cpu_us, goal=COST)
        )
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    client = load_client(args, python_fallback=False)
    with BenchSession(NAME) as session:
        runs = _measure(session, args, client)
    print()
    print(
        f"observability: {args.workers} worker(s) each, PATCH wrk -c{args.connections}, turns wrk"
        f" -c{args.turn_connections}, {args.seconds:g} s x {args.rounds} round(s), client {tool_name(client)}"
    )
    counted = runs.counted
    rows = [
        *_workload_rows(
            "PATCH persona", runs.patches, PERSONA_ROUTE, "req/s", counted[PERSONA_ROUTE], args.connections
        ),
        *_workload_rows(
            "chat turn", runs.turns, TURN_ROUTE, "turns/s", counted[TURN_ROUTE], args.turn_connections
        ),
        *_layer_rows(runs.layer, runs.patches, runs.turns),
    ]
    data = {
        "layer_cost": runs.layer,
        "persona_patch": runs.patches.as_json(),
        "chat_turn_throughput": runs.turns.as_json(),
        "metrics_counted": {" ".join(route): value for route, value in counted.items()},
    }
    title = f"{NAME} ({args.workers} workers; app: metrics on, floor: bare or metrics off as named)"
    return conclude(NAME, title, args, rows, data, runs.logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
