"""What the offline moderation costs a chat turn (issue #19: "the offline check adds <= 5%
API CPU per turn"), and what the safety bookkeeping in SQL costs Postgres.

Three API servers in the same run, rounds alternating, each `avatar-chat serve` with
`--workers` workers, replies from the fake model (`bench/apps/fake_model.py`,
`LLM_PROVIDER=openai`, no pause between chunks: a reply of ~1,060 characters in 194
one-word chunks, as a model streams tokens), the notices the same in the first two:

- `offline`: MODERATION_PROVIDER=offline (the default), SAFETY_DISCLOSURE_NOTICE="": the
  message is checked before the model is asked, the reply every
  MODERATION_OUTPUT_CHECK_CHARS (200) characters as it streams and once whole at the end;
- `none`: MODERATION_PROVIDER=none, SAFETY_DISCLOSURE_NOTICE="": no check, but the break
  notice (the default text) is still on, so begin_turn still gets p_safety and does the
  bookkeeping (the avatar_chat.interactions row lock and upsert of every turn);
- `off`: MODERATION_PROVIDER=none, SAFETY_DISCLOSURE_NOTICE="", SAFETY_BREAK_NOTICE="":
  begin_turn gets p_safety=null and skips all of it.

(The disclosure is off in all three so that no conversation holds a notice row and the
database check below holds for all; the break notice is for minors only, and these users
are adults, so the only difference between `none` and `off` is the bookkeeping.)

The `chat_turn_throughput` workload (wrk, `--turn-connections` connections, a user each,
`--users` users, each with a conversation per server, JSON answers), the messages
`bench.harness.chat_texts.MESSAGES` (190-230 characters, alternating; none flagged, some
holding the classifier's key words in everyday use, so some of its regexes run). Each run
starts and ends settled (`throughput.measure(settle=...)`: the turns in flight when wrk
stops finish before the next run and count in this one), so CPU per turn is CPU over
completed turns, nothing spilling into another server's run.

Reports turns/s, API and Postgres CPU per turn (/proc) of each, `offline/none` (the
target: API CPU <= 1.05x) and `none/off`, per round and over all rounds; the fake model's
and wrk's CPU apart (counted in neither). Beside it, `bench.probes.moderation_cpu`: the
turn's whole moderation path in a loop of its own, set against the `none` server's API CPU
per turn. Its caches are hot, so it is a floor: the same code timed inside a loaded
server took ~2.5x as long (docs/performance.md, "Moderation cost"); and its
`avatar_chat_moderation_seconds` (wall time) is no CPU figure on a saturated machine,
where a check may wait for a core. Afterwards each server's conversations must hold one
complete reply and one user message per 2xx answer.

    .venv/bin/python -m bench.scenarios.moderation_cost [--workers 3] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar_chat.safety.offline import classify
from bench.harness.chat_texts import MESSAGES, REPLY, REPLY_CHUNKS
from bench.harness.cli import scenario_main, step
from bench.harness.database import replies_line
from bench.harness.load import HttpRequest
from bench.harness.report import Goal, Row, conclude, fmt_ratio, load_note
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, Target, load_client, print_rounds, tool_name
from bench.harness.users import avatars_and_conversations, users_in_database
from bench.harness.workloads import measure_settled_turns, turn_requests

NAME = "moderation_cost"
SERVERS = {"offline": "moderation-offline", "none": "moderation-none", "off": "safety-off"}
LABELS = {
    "offline": "offline moderation",
    "none": "no moderation (notices on)",
    "off": "safety off (no moderation, no notices)",
}
ENV = {
    "offline": {"MODERATION_PROVIDER": "offline", "SAFETY_DISCLOSURE_NOTICE": ""},
    "none": {"MODERATION_PROVIDER": "none", "SAFETY_DISCLOSURE_NOTICE": ""},
    "off": {"MODERATION_PROVIDER": "none", "SAFETY_DISCLOSURE_NOTICE": "", "SAFETY_BREAK_NOTICE": ""},
}
MODEL = "fake-model"
API_COST = Goal("app/floor", "<=", 1.05)  # offline / none, API CPU per turn


def _texts_not_flagged() -> None:
    """A flagged message or reply would measure a refusal, not a turn."""
    for text in (*MESSAGES, REPLY):
        if classify(text):
            raise RuntimeError(f"the offline moderator flags a benchmark text: {text[:80]!r}")


def _answer_ok(request: HttpRequest, answer: dict[str, Any]) -> bool:
    reply = answer.get("assistant_message") or {}
    return bool(reply.get("status") == "complete" and str(reply.get("content", "")).split() == REPLY.split())


def _probe(folder: Path) -> dict[str, Any]:
    """bench.probes.moderation_cpu in a process of its own, in multiprocess mode as serve runs the API."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.probes.moderation_cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@dataclass
class _Runs:
    measured: Measured
    before: dict[str, dict[str, int]]  # per server, its conversations' messages by status
    after: dict[str, dict[str, int]]
    probe: dict[str, Any]
    logs: dict[str, list[str]]


def _measure(session: BenchSession, args: argparse.Namespace, client: str) -> _Runs:
    dsn, users = users_in_database(session, args.users)
    with step(f"fake model, three API servers ({args.workers} worker(s) each): offline, none, off"):
        model = session.start_fake_model(chunks=len(REPLY_CHUNKS), interval_ms=0, text=REPLY)
        llm = {"LLM_PROVIDER": "openai", "LLM_BASE_URL": f"{model.base_url}/v1", "LLM_API_KEY": "bench-key"}
        servers = {
            key: session.start_app(workers=args.workers, env={**llm, **ENV[key]}, name=SERVERS[key])
            for key in SERVERS
        }
    conversations = avatars_and_conversations(servers["offline"].base_url, users, len(servers))
    convs = {key: [c[i] for c in conversations] for i, key in enumerate(servers)}
    targets = [
        Target(key, LABELS[key], server, turn_requests("app", users, convs[key], MESSAGES))
        for key, server in servers.items()
    ]
    turns = measure_settled_turns(
        session, NAME, targets, args, dsn, convs, client=client, answer_ok=_answer_ok, also_metered=[model]
    )
    logs = session.server_log_report()
    with step("the turn's moderation alone, in-process (bench.probes.moderation_cpu)"):
        probe = _probe(session.tmp / "probe-metrics")
    return _Runs(turns.measured, turns.before, turns.after, probe, logs)


def _per_round(measured: Measured, a: str, b: str, process: dict[str, str]) -> list[float]:
    """`a`'s CPU ms per turn over `b`'s, round by round (`process[key]`: whose CPU)."""
    return [
        ra.cpu_ms_per_request.get(process[a], 0.0) / rb.cpu_ms_per_request[process[b]]
        for ra, rb in zip(measured.runs[a], measured.runs[b], strict=True)
        if rb.cpu_ms_per_request.get(process[b])
    ]


def _cpu_lines(measured: Measured) -> tuple[dict[str, float], dict[str, float]]:
    """CPU ms per turn of each server's API and of Postgres; the ratios, per round and overall."""
    api = {key: measured.cpu_ms(key, SERVERS[key]) for key in SERVERS}
    pg = {key: measured.cpu_ms(key, "postgres") for key in SERVERS}
    print("  CPU ms per turn (mean of the rounds):")
    for key in SERVERS:
        print(
            f"    {LABELS[key]:<40} API {api[key]:7.3f}   Postgres {pg[key]:6.3f}"
            f"   (fake model {measured.cpu_ms(key, MODEL):.3f}, wrk {measured.cpu_ms(key, 'client'):.3f})"
        )
    processes = {"API": dict(SERVERS), "Postgres": dict.fromkeys(SERVERS, "postgres")}
    for label, figures in (("API", api), ("Postgres", pg)):
        for a, b in (("offline", "none"), ("none", "off")):
            rounds = _per_round(measured, a, b, processes[label])
            each = ", ".join(fmt_ratio(r) for r in rounds)
            median = f"; median round {fmt_ratio(statistics.median(rounds))}" if rounds else ""
            print(
                f"    {label} CPU per turn {a}/{b}: {fmt_ratio(figures[a] / figures[b])}"
                f" (rounds: {each}{median})"
            )
    return api, pg


def run(args: argparse.Namespace) -> list[Row]:
    _texts_not_flagged()
    client = load_client(args, python_fallback=False)
    with BenchSession(NAME) as session:
        runs = _measure(session, args, client)
    measured, probe = runs.measured, runs.probe

    print()
    print(
        f"{NAME}: {args.workers} worker(s) each, {args.turn_connections} connections (a user each),"
        f" {args.seconds:g} s x {args.rounds} round(s), client {tool_name(client)}; fake model: a reply of"
        f" {probe['reply_chars']} characters in {probe['reply_chunks']} chunks, no pause; messages"
        f" {min(probe['message_chars'])}-{max(probe['message_chars'])} characters"
    )
    print_rounds(measured, [("offline", "none"), ("none", "off")])
    for key in SERVERS:
        slack = args.turn_connections * measured.run_count(key)
        print(replies_line(key, runs.before[key], runs.after[key], measured.ok(key), slack))
    api, pg = _cpu_lines(measured)
    us = probe["us_per_turn"]
    none_us = api["none"] * 1000
    added = api["offline"] / api["none"] - 1
    print("  what the offline moderation adds to a turn, against the `none` server's API CPU per turn:")
    print(
        f"    /proc, end to end: {api['offline'] - api['none']:+.3f} ms ({added:+.1%});"
        f" target <= +5%: {'met' if added <= API_COST.value - 1 else 'NOT met'}"
    )
    print(
        f"    in-process, hot caches, a floor (bench.probes.moderation_cpu): {us['added']:.0f} us"
        f" ({us['added'] / none_us:.1%}): {probe['classify_calls']} checks reading"
        f" {sum(probe['classify_chars'])} characters, classify {probe['classify_us']:.0f} us, the rest"
        " ReplyCheck, Moderation.check and metrics"
    )
    total = {key: measured.total(key) for key in SERVERS}
    note = load_note(*total.values())
    rows = [
        Row(
            NAME,
            "chat turns/s: offline / none",
            "turns/s",
            total["offline"].rps,
            total["none"].rps,
            note=note,
        ),
        Row(NAME, "API CPU per turn: offline / none", "ms", api["offline"], api["none"], goal=API_COST),
        Row(NAME, "Postgres CPU per turn: offline / none", "ms", pg["offline"], pg["none"]),
        Row(NAME, "offline moderation in-process / none API CPU", "us", us["added"], none_us),
        Row(NAME, "chat turns/s: none / safety off", "turns/s", total["none"].rps, total["off"].rps),
        Row(NAME, "API CPU per turn: none / safety off", "ms", api["none"], api["off"]),
        Row(NAME, "Postgres CPU per turn: none / safety off", "ms", pg["none"], pg["off"]),
    ]
    data = {
        "runs": measured.as_json(),
        "probe": probe,
        "messages_before": runs.before,
        "messages_after": runs.after,
    }
    title = (
        f"{NAME} ({args.workers} workers, wrk -c{args.turn_connections};"
        " app / floor: offline / none, or none / safety off as named)"
    )
    return conclude(NAME, title, args, rows, data, runs.logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
