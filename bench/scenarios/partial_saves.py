"""What saving a reply's text while it is generated costs a chat turn.

Resume on any worker and stop from any worker rest on the generating worker saving the
text so far at a bounded rate (CHAT_PARTIAL_SAVE_MS, 250 ms, or CHAT_PARTIAL_SAVE_CHARS,
200 characters, whichever comes first). This runs the same concurrent chat turns as
`chat_turn_throughput` (`--users` users, one connection each) against two API servers in the same
run, rounds alternating: one with partial saves (the defaults), one without
(CHAT_PARTIAL_SAVE_MS=0), both with the offline provider pausing `--chunk-delay-ms` (20)
between chunks, as a model streams. It reports turns/s, the CPU a turn costs the API and
Postgres with and without, and the partial saves per turn (from the UPDATE counter of
public.messages: each turn settles its reply once; the other UPDATEs are saves).

Since issue #17 a reply's text is saved as it grows only while a client follows it
(GET .../stream) or asked to stop it: this load has no followers, so both servers should
show no partial saves and the same cost per turn. It now checks that replies nobody
follows cost nothing for resume and stop (their leases renewed by one statement per
worker aside); what a followed reply costs shows in `stream_burst`'s per-reply counts.

    .venv/bin/python -m bench.scenarios.partial_saves [--workers 3] [--chunk-delay-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench.harness.cli import scenario_main, step
from bench.harness.database import query
from bench.harness.report import Row, conclude
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, Target, load_client, measure, print_rounds
from bench.harness.users import avatars_and_conversations, users_in_database
from bench.harness.workloads import check_once, turn_answer_ok, turn_requests

NAME = "partial_saves"
SERVERS = {"saves": "with-saves", "nosaves": "without-saves"}


def _message_updates(dsn: str) -> int:
    time.sleep(1.0)  # activity statistics are flushed to the shared counters about once a second
    rows = asyncio.run(query(dsn, "select n_tup_upd from pg_stat_user_tables where relname = 'messages'"))
    return int(rows[0]["n_tup_upd"])


def _measure(
    session: BenchSession, args: argparse.Namespace, client: str
) -> tuple[Measured, int, dict[str, list[str]]]:
    """The two servers' rounds, UPDATEs of public.messages while they ran, the servers' logs."""
    slow = {"OFFLINE_LLM_CHUNK_DELAY_MS": str(args.chunk_delay_ms)}
    dsn, users = users_in_database(session, args.users)
    with step(f"two API servers ({args.workers} worker(s) each): with and without partial saves"):
        saves = session.start_app(workers=args.workers, env=slow, name=SERVERS["saves"])
        nosaves = session.start_app(
            workers=args.workers, env={**slow, "CHAT_PARTIAL_SAVE_MS": "0"}, name=SERVERS["nosaves"]
        )
    conversations = avatars_and_conversations(saves.base_url, users, 2)
    targets = [
        Target(
            "saves", "with partial saves", saves, turn_requests("app", users, [c[0] for c in conversations])
        ),
        Target("nosaves", "without", nosaves, turn_requests("app", users, [c[1] for c in conversations])),
    ]
    for target in targets:
        check_once(target.server, target.requests, 201, turn_answer_ok)
    before = _message_updates(dsn)
    measured = measure(
        session, NAME, targets, args, connections=args.turn_connections, client=client, affinity=True
    )
    return measured, _message_updates(dsn) - before, session.server_log_report()


def run(args: argparse.Namespace) -> list[Row]:
    client = load_client(args, python_fallback=False)
    with BenchSession(NAME) as session:
        measured, updates, logs = _measure(session, args, client)

    turns = {key: measured.ok(key) for key in SERVERS}
    saves_per_turn = (updates - turns["saves"] - turns["nosaves"]) / max(1, turns["saves"])
    print()
    print(
        f"partial_saves: {args.workers} worker(s) each, {args.turn_connections} connections (a user each),"
        f" offline provider pausing {args.chunk_delay_ms} ms between chunks"
    )
    print_rounds(measured, [("saves", "nosaves")])
    api = {key: measured.cpu_ms(key, SERVERS[key]) for key in SERVERS}
    pg = {key: measured.cpu_ms(key, "postgres") for key in SERVERS}
    print(
        f"  partial saves per turn {saves_per_turn:.2f}; CPU ms per turn with/without: API {api['saves']:.3f}"
        f" / {api['nosaves']:.3f}, Postgres {pg['saves']:.3f} / {pg['nosaves']:.3f}"
    )
    total = {key: measured.total(key) for key in SERVERS}
    # In the summary, "app" is the API with partial saves and "floor" the same API without.
    rows = [
        Row(NAME, "chat turns/s: with saves / without", "turns/s", total["saves"].rps, total["nosaves"].rps),
        Row(NAME, "partial saves per turn", "n", saves_per_turn),
        Row(NAME, "API CPU per turn: with / without", "ms", api["saves"], api["nosaves"]),
        Row(NAME, "Postgres CPU per turn: with / without", "ms", pg["saves"], pg["nosaves"]),
    ]
    data = {"runs": measured.as_json(), "saves_per_turn": saves_per_turn, "message_updates": updates}
    title = f"{NAME} ({args.workers} workers, wrk -c{args.turn_connections}; app: with saves, floor: without)"
    return conclude(NAME, title, args, rows, data, logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
