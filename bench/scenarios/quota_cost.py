"""What the per-plan quotas cost a chat turn (issue #20: "chat turns with quotas on vs off
in the same run: <= 5% throughput").

Quotas are per user (public.user_plans names a user's plan, public.plans its limits), so
one set of servers serves both sides: one `avatar-chat serve` with `--workers` workers,
replies from the fake model (`bench/apps/fake_model.py`, `LLM_PROVIDER=openai`, no pause
between chunks: `chat_texts.REPLY`, ~1,060 characters in 194 one-word chunks, no usage
chunk, so every reply records an estimate), the deployment's own limits off (APP_ENV:
RATE_LIMIT_SENDS_PER_MINUTE=0, MAX_CONCURRENT_STREAMS=0), SAFETY_DISCLOSURE_NOTICE=""
(no notice rows, so the database check below holds), moderation as deployed (offline).
One server rather than two identical ones: the same processes, caches, connection pools
and Postgres backends serve both groups, so nothing but the plan differs between them
(two servers would add their own differences, and idle processes, on 2 shared cores);
CPU is still per group, since the groups' runs take turns and each is settled.

Two groups of `--users` (64) users, each user in `public.user_plans` (set as the database
owner, as an operator would), so both resolve their plan the same way (plan_source
`user_plans`, checked through GET /me/usage before measuring):

- `quotas`: plan `bench-quotas`, every limit set, all far beyond reach: messages_per_day,
  sends_per_minute 2e9; tokens_per_day, tokens_per_month 1e15; max_concurrent_streams
  1e6; max_reply_tokens 1e6 (the lower of it and LLM_MAX_TOKENS holds: the model is asked
  for the same max_tokens as `off`); models {LLM_MODEL} (the same model). So every turn's
  messages_enforce_limits runs all of it: the per-minute send counter, the day's calls and
  tokens against the quotas, the count of the user's streaming replies.
- `off`: plan `bench-off`, no limit set (all null): the trigger still reads the plan and
  counts the call in avatar_chat.usage_counters, and the reply records its usage
  (record_usage): usage is always recorded; only the checks differ.

Each group runs the `chat_turn_throughput` workload (wrk, `--turn-connections`
connections, a user each, JSON answers, `chat_texts.MESSAGES` alternating) on its own
conversations, the groups' runs alternating over `--rounds` rounds of `--seconds`, each
run settled (`throughput.measure(settle=...)`: the turns in flight when wrk stops finish
before the next run and count in this one), so CPU per turn is over completed turns.

Reports turns/s, API and Postgres CPU per turn (/proc) of each group, the ratios
quotas/off per round (with the median round) and overall; target: throughput quotas/off
>= 0.95. Afterwards: no turn refused (no non-2xx answer, no 429 counted by
`avatar_chat_rate_limit_refusals_total`), each group's conversations hold one complete
reply and one user message per 2xx answer, one usage record per complete reply (under
the group's plan), and the users' usage counters one call per user message.

    .venv/bin/python -m bench.scenarios.quota_cost [--workers 3] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from tests.support.factories import User

from bench.harness.chat_texts import MESSAGES, REPLY, REPLY_CHUNKS
from bench.harness.cli import scenario_main, step
from bench.harness.database import query, replies_line
from bench.harness.load import HttpRequest
from bench.harness.report import Goal, Row, conclude, fmt_ratio, load_note
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, Target, load_client, print_rounds, tool_name
from bench.harness.users import avatars_and_conversations, users_in_database
from bench.harness.workloads import measure_settled_turns, turn_requests

NAME = "quota_cost"
SERVER = "avatar-chat"  # the one API server (its process tree's CPU)
MODEL = "fake-model"  # the fake model's process (CPU counted apart)
LLM_MODEL = "bench-model"  # the model the API asks for, the only one bench-quotas lists
GROUPS = ("quotas", "off")
PLANS = {"quotas": "bench-quotas", "off": "bench-off"}
LABELS = {"quotas": "quotas (every limit set, never reached)", "off": "no limit set (usage recorded)"}
# bench-quotas: every limit, none within reach of a run (integer columns: at most 2^31 - 1).
LIMITS: dict[str, int | list[str]] = {
    "messages_per_day": 2_000_000_000,
    "tokens_per_day": 10**15,
    "tokens_per_month": 10**15,
    "max_reply_tokens": 1_000_000,
    "models": [LLM_MODEL],
    "max_concurrent_streams": 1_000_000,
    "sends_per_minute": 2_000_000_000,
}
THROUGHPUT = Goal("app/floor", ">=", 0.95)  # quotas / off, turns/s


def _answer_ok(request: HttpRequest, answer: dict[str, Any]) -> bool:
    reply = answer.get("assistant_message") or {}
    return bool(reply.get("status") == "complete" and str(reply.get("content", "")).split() == REPLY.split())


async def _assign_plans(dsn: str, groups: dict[str, list[User]]) -> None:
    """The two plans, and each group's users on theirs (as the owner, as an operator would)."""
    columns = ", ".join(LIMITS)
    values = ", ".join(f"${i + 2}" for i in range(len(LIMITS)))
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                f"insert into public.plans (name, {columns}) values ($1, {values})",
                PLANS["quotas"],
                *LIMITS.values(),
            )
            await conn.execute("insert into public.plans (name) values ($1)", PLANS["off"])
            for key, users in groups.items():
                await conn.execute(
                    "insert into public.user_plans (user_id, plan) select u, $2 from unnest($1::uuid[]) as u",
                    [u.id for u in users],
                    PLANS[key],
                )
    finally:
        await conn.close()


def _check_plans(server: Server, groups: dict[str, list[User]]) -> None:
    """Every user's GET /me/usage names their group's plan, from user_plans, with every
    limit set (quotas) or none (off)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for key, users in groups.items():
            for user in users:
                response = client.get("/me/usage", headers=user.headers)
                usage = response.json() if response.status_code == 200 else {}
                plan = usage.get("plan") or {}
                limits = [plan.get(name) for name in LIMITS]
                fine = (
                    plan.get("name") == PLANS[key]
                    and usage.get("plan_source") == "user_plans"
                    and (
                        all(v is not None for v in limits)
                        if key == "quotas"
                        else limits == [None] * len(LIMITS)
                    )
                )
                if not fine:
                    raise RuntimeError(
                        f"{key}: GET /me/usage of {user.email}: {response.status_code} {response.text[:300]}"
                    )


def _refusals(server: Server) -> dict[str, float]:
    """avatar_chat_rate_limit_refusals_total by code, from the server's /metrics (every
    worker's, aggregated); {} when none was counted."""
    response = httpx.get(f"{server.base_url}/metrics", timeout=30)
    response.raise_for_status()
    counts: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("avatar_chat_rate_limit_refusals_total{"):
            labels, _, value = line.rpartition(" ")
            code = labels.split('code="', 1)[1].split('"', 1)[0] if 'code="' in labels else "?"
            counts[code] = counts.get(code, 0.0) + float(value)
    return {code: n for code, n in counts.items() if n}


def _usage(dsn: str, users: Sequence[User], conversations: Sequence[str]) -> dict[str, Any]:
    """What the group's turns recorded: reply records by plan, and the calls its users'
    counters hold this month."""
    records = asyncio.run(
        query(
            dsn,
            "select coalesce(plan, '(none)') as plan, count(*) as n from public.usage_records"
            " where conversation_id = any($1::uuid[]) and kind = 'reply' group by 1",
            [uuid.UUID(c) for c in conversations],
        )
    )
    (counters,) = asyncio.run(
        query(
            dsn,
            "select coalesce(sum(month_messages), 0) as calls, coalesce(sum(month_tokens), 0) as tokens"
            " from avatar_chat.usage_counters where user_id = any($1::uuid[])",
            [u.id for u in users],
        )
    )
    return {
        "reply_records": {row["plan"]: int(row["n"]) for row in records},
        "counted_calls": int(counters["calls"]),
        "counted_tokens": int(counters["tokens"]),
    }


@dataclass
class _Runs:
    measured: Measured
    before: dict[str, dict[str, int]]  # per group, its conversations' messages by status
    after: dict[str, dict[str, int]]
    usage: dict[str, dict[str, Any]]  # per group, _usage()
    refusals: dict[str, float]
    logs: dict[str, list[str]]


def _measure(session: BenchSession, args: argparse.Namespace, client: str) -> _Runs:
    dsn, users = users_in_database(session, 2 * args.users)
    groups = {key: users[i * args.users : (i + 1) * args.users] for i, key in enumerate(GROUPS)}
    with step(
        f"plans {PLANS['quotas']} (every limit set) and {PLANS['off']} (none), {args.users} users each"
    ):
        asyncio.run(_assign_plans(dsn, groups))
    with step(f"fake model, the API server ({args.workers} worker(s))"):
        model = session.start_fake_model(chunks=len(REPLY_CHUNKS), interval_ms=0, text=REPLY)
        env = {
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": f"{model.base_url}/v1",
            "LLM_API_KEY": "bench-key",
            "LLM_MODEL": LLM_MODEL,
            "SAFETY_DISCLOSURE_NOTICE": "",
        }
        server = session.start_app(workers=args.workers, env=env, name=SERVER)
    with step("each user's plan, as GET /me/usage answers it"):
        _check_plans(server, groups)
    # One conversation per user (the groups are different users), in the users' order.
    conversations = [c[0] for c in avatars_and_conversations(server.base_url, users, 1)]
    convs = {key: conversations[i * args.users : (i + 1) * args.users] for i, key in enumerate(GROUPS)}
    targets = [
        Target(key, LABELS[key], server, turn_requests("app", groups[key], convs[key], MESSAGES))
        for key in GROUPS
    ]
    turns = measure_settled_turns(
        session, NAME, targets, args, dsn, convs, client=client, answer_ok=_answer_ok, also_metered=[model]
    )
    usage = {key: _usage(dsn, groups[key], convs[key]) for key in GROUPS}
    refusals = _refusals(server)
    return _Runs(turns.measured, turns.before, turns.after, usage, refusals, session.server_log_report())


def _per_round(measured: Measured, process: str | None) -> list[float]:
    """quotas/off round by round: CPU ms per turn of `process`, or turns/s (None)."""

    def figure(load: Any) -> float:
        return float(load.rps if process is None else load.cpu_ms_per_request.get(process, 0.0))

    return [
        figure(a) / figure(b)
        for a, b in zip(measured.runs["quotas"], measured.runs["off"], strict=True)
        if figure(b)
    ]


def _ratio_line(label: str, overall: float, rounds: list[float]) -> str:
    each = ", ".join(fmt_ratio(r) for r in rounds)
    median = f"; median round {fmt_ratio(statistics.median(rounds))}" if rounds else ""
    return f"    {label} quotas/off: {fmt_ratio(overall)} (rounds: {each}{median})"


def _checks(runs: _Runs, args: argparse.Namespace) -> None:
    """No turn refused; every 2xx a complete reply; every reply's usage recorded."""
    measured = runs.measured
    for key in GROUPS:
        slack = args.turn_connections * measured.run_count(key)
        print(replies_line(key, runs.before[key], runs.after[key], measured.ok(key), slack))
    for key in GROUPS:
        loads = measured.runs[key] + measured.warmups.get(key, [])
        refused = sum(load.non_2xx for load in loads)
        errors = sum(sum(load.transport_errors.values()) for load in loads)
        usage = runs.usage[key]
        complete = runs.after[key].get("assistant complete", 0)
        sent = runs.after[key].get("user complete", 0)
        records = usage["reply_records"]
        fine = (
            not refused
            and not errors
            and records == {PLANS[key]: complete}
            and usage["counted_calls"] == sent
        )
        print(
            f"  usage, {key}: {refused} non-2xx answers, {errors} transport errors; reply usage records"
            f" {records} for {complete} complete replies; counters: {usage['counted_calls']} calls for"
            f" {sent} user messages, {usage['counted_tokens']} tokens" + ("" if fine else "  <-- MISMATCH")
        )
    print(
        "  refusals counted by the server (avatar_chat_rate_limit_refusals_total): "
        + (f"{runs.refusals}  <-- MISMATCH" if runs.refusals else "none")
    )


def run(args: argparse.Namespace) -> list[Row]:
    client = load_client(args, python_fallback=False)
    with BenchSession(NAME) as session:
        runs = _measure(session, args, client)
    measured = runs.measured

    print()
    print(
        f"{NAME}: one server, {args.workers} worker(s), two groups of {args.users} users,"
        f" {args.turn_connections} connections (a user each), {args.seconds:g} s x {args.rounds} round(s)"
        f" per group, client {tool_name(client)}; fake model: a reply of {len(REPLY)} characters in"
        f" {len(REPLY_CHUNKS)} chunks, no pause"
    )
    print_rounds(measured, [("quotas", "off")])
    _checks(runs, args)
    total = {key: measured.total(key) for key in GROUPS}
    api = {key: measured.cpu_ms(key, SERVER) for key in GROUPS}
    pg = {key: measured.cpu_ms(key, "postgres") for key in GROUPS}
    print("  CPU ms per turn (mean of the rounds):")
    for key in GROUPS:
        print(
            f"    {LABELS[key]:<42} API {api[key]:7.3f}   Postgres {pg[key]:6.3f}"
            f"   (fake model {measured.cpu_ms(key, MODEL):.3f}, wrk {measured.cpu_ms(key, 'client'):.3f})"
        )
    rps = total["quotas"].rps / total["off"].rps if total["off"].rps else float("nan")
    print(_ratio_line("turns/s", rps, _per_round(measured, None)))
    print(_ratio_line("API CPU per turn", api["quotas"] / api["off"], _per_round(measured, SERVER)))
    print(_ratio_line("Postgres CPU per turn", pg["quotas"] / pg["off"], _per_round(measured, "postgres")))
    met = "met" if rps >= THROUGHPUT.value else "NOT met"
    print(f"  target: throughput quotas/off >= {THROUGHPUT.value:g}: {met}")
    note = load_note(*total.values())
    rows = [
        Row(
            NAME,
            "chat turns/s: quotas / off",
            "turns/s",
            total["quotas"].rps,
            total["off"].rps,
            goal=THROUGHPUT,
            note=note,
        ),
        Row(NAME, "API CPU per turn: quotas / off", "ms", api["quotas"], api["off"]),
        Row(NAME, "Postgres CPU per turn: quotas / off", "ms", pg["quotas"], pg["off"]),
    ]
    data = {
        "runs": measured.as_json(),
        "plans": {"quotas": {"name": PLANS["quotas"], **LIMITS}, "off": {"name": PLANS["off"]}},
        "messages_before": runs.before,
        "messages_after": runs.after,
        "usage": runs.usage,
        "refusals": runs.refusals,
    }
    title = f"{NAME} ({args.workers} workers, wrk -c{args.turn_connections}; app / floor: quotas / off)"
    return conclude(NAME, title, args, rows, data, runs.logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
