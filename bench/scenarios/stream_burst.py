"""A burst of streamed replies (issue #17): N users at once, each in a conversation of
their own, sending with `Accept: text/event-stream` while a model streams every reply at a
person's reading pace; the API against the relay floor, in the same run.

Set-up: `--workers` (3) workers each for `avatar-chat serve` (LLM_PROVIDER=openai,
LLM_BASE_URL at the fake model, a key) and the relay floor (`bench/apps/relay.py`:
FastAPI + httpx + asyncpg, the user message and a placeholder in one round trip, the
chunks relayed, the reply saved in a second; no auth, RLS or partial saves); both call
`bench/apps/fake_model.py` (its own process, not counted), which streams each reply as
`--stream-chunks` (20) chunks, one every `--chunk-interval-ms` (500). Then, for each N of
`--burst-users` (300,1000), a burst on each server (the order alternating): N users send
once each, their sends spread evenly over `--burst-spread` (5) s, each on its own
connection, reading its stream to the end (bench/harness/burst.py). A warm-up of 4 sends
per worker runs first on both.

Per burst: replies ended with `done`, with `error` (and its codes), refused (not 2xx, by
status and code), anything else (cut, timeouts); p50/p99 time from send to `done`; CPU
per completed reply of the API's and Postgres's process trees (/proc, from the first send
to the end of the last stream); peak Postgres connections of the server
(pg_stat_activity by application_name) and peak RSS of its processes; rows written per
reply per table and transactions per reply (Postgres's activity counters, read
`--stats-wait` (11) s after the burst, less the background both servers make while idle,
measured before the first burst). The embedded Postgres has no pg_stat_statements, so
statements are counted as rows written, transactions and (track_functions = pl) calls of
each SQL function.

    .venv/bin/python -m bench.scenarios.stream_burst [--burst-users 300,1000] [--burst-spread 5]
        [--stream-chunks 20] [--chunk-interval-ms 500] [--workers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass

import uvloop
from tests.support.factories import User

from bench.apps.relay import APPLICATION_NAME
from bench.harness.burst import Burst, raise_open_files_limit, run_burst, sse_post
from bench.harness.cli import scenario_main, step
from bench.harness.cpu import CpuMeter
from bench.harness.database import query, reply_statuses, write_counters
from bench.harness.report import Goal, Row, conclude
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.stats import percentile
from bench.harness.users import create_avatars, insert_conversations, users_in_database

NAME = "stream_burst"
KINDS = ("app", "floor")
PATHS = {"app": "/conversations/{}/messages", "floor": "/relay/conversations/{}/messages"}
APPLICATION_NAMES = {"app": "avatar-chat", "floor": APPLICATION_NAME}
SERVER_NAMES = {"app": "avatar-chat", "floor": "relay"}
MESSAGE = "Tell me something nice about today, and keep it short please."
WARM_SENDS_PER_WORKER = 4


@dataclass
class Measured:
    """One burst on one server: what the streams got, and what Postgres counted."""

    burst: Burst
    writes: Counter[str]  # rows per table and kind, function calls, transactions (less background)
    saved: Counter[str]  # `<how the stream ended> / <the reply's status in the database>`

    def replies(self) -> int:
        """The replies streamed (2xx answers, whatever their end): what per-reply figures
        divide by, so that failures show as counts and not as cheaper or dearer replies."""
        return max(1, sum(1 for o in self.burst.outcomes if 200 <= o.status < 300))

    def cpu_ms(self, process: str) -> float:
        b = self.burst
        return (b.cpu_after.get(process, 0.0) - b.cpu_before.get(process, 0.0)) * 1000 / self.replies()

    def per_reply(self, key: str) -> float:
        return self.writes[key] / self.replies()

    def rows_per_reply(self) -> float:
        rows = sum(v for k, v in self.writes.items() if k.endswith((" ins", " upd", " del")))
        return rows / self.replies()


@dataclass
class Setup:
    dsn: str
    servers: dict[str, Server]
    users: list[User]
    meter: CpuMeter


def _start(session: BenchSession, args: argparse.Namespace) -> Setup:
    dsn, users = users_in_database(session, max(args.burst_users))
    if session.postgres_pid() is not None:  # our own cluster: count calls of SQL functions too
        asyncio.run(query(dsn, "alter system set track_functions = 'pl'"))
        asyncio.run(query(dsn, "select pg_reload_conf()"))
    with step(f"fake model, API and relay floor ({args.workers} worker(s) each)"):
        model = session.start_fake_model(chunks=args.stream_chunks, interval_ms=args.chunk_interval_ms)
        model_url = f"{model.base_url}/v1"
        llm = {"LLM_PROVIDER": "openai", "LLM_BASE_URL": model_url, "LLM_API_KEY": "bench-key"}
        app = session.start_app(workers=args.workers, env=llm)
        relay_env = {"FLOOR_DATABASE_URL": dsn, "RELAY_MODEL_URL": model_url}
        floor = session.start_uvicorn("relay", "bench.apps.relay:app", args.workers, relay_env, "/ready")
    with step(f"{len(users)} avatars"):
        asyncio.run(create_avatars(app.base_url, users, concurrency=8))
    servers = {"app": app, "floor": floor}
    return Setup(dsn, servers, users, session.cpu_meter([app, floor, model]))


def _burst(
    setup: Setup, kind: str, sends: list[tuple[User, str]], spread_s: float, args: argparse.Namespace
) -> Burst:
    """One burst on server `kind`: each (user, conversation) sends once."""
    server = setup.servers[kind]
    requests = [
        sse_post(server.port, PATHS[kind].format(c), u.headers, {"content": MESSAGE}) for u, c in sends
    ]
    assert server.proc is not None
    watch = (setup.dsn, APPLICATION_NAMES[kind], server.proc.pid)
    timeout_s = spread_s + args.stream_chunks * args.chunk_interval_ms / 1000 + 60
    return uvloop.run(
        run_burst(
            server.port, requests, spread_s=spread_s, timeout_s=timeout_s, watch=watch, meter=setup.meter
        )
    )


def _conversations(dsn: str, users: list[User]) -> list[tuple[User, str]]:
    return list(zip(users, asyncio.run(insert_conversations(dsn, users, "burst")), strict=True))


def _counters(dsn: str) -> tuple[Counter[str], float]:
    return asyncio.run(write_counters(dsn)), time.monotonic()


def _measure(
    setup: Setup, args: argparse.Namespace
) -> tuple[dict[tuple[int, str], Measured], Counter[str], float]:
    """Each burst; the background per second of both servers idle; its window (s)."""
    warm_users = setup.users[: WARM_SENDS_PER_WORKER * args.workers]
    with step("a new conversation for each user of each burst"):
        sends = {
            (n, kind): _conversations(setup.dsn, setup.users[:n]) for n in args.burst_users for kind in KINDS
        }
    with step(f"warm-up: {len(warm_users)} streamed sends to each"):
        for kind in KINDS:
            warm = _conversations(setup.dsn, warm_users)
            burst = _burst(setup, kind, warm, 1.0, args)
            if burst.count("done") != len(warm):
                first = next(o for o in burst.outcomes if o.end != "done")
                raise RuntimeError(f"{kind} warm-up: {burst.count('done')} of {len(warm)} done; e.g. {first}")
    with step(f"background of both servers idle, {args.stats_wait:g} s"):
        time.sleep(args.stats_wait)
        idle_from, idle_start = _counters(setup.dsn)
        time.sleep(args.stats_wait)
        counters, counted_at = _counters(setup.dsn)
        idle_s = counted_at - idle_start
        background = counters - idle_from
    measured: dict[tuple[int, str], Measured] = {}
    for i, n in enumerate(args.burst_users):
        for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
            with step(f"N={n} on {kind}: sends over {args.burst_spread:g} s, then {args.stats_wait:g} s"):
                burst = _burst(setup, kind, sends[(n, kind)], args.burst_spread, args)
                time.sleep(args.stats_wait)
                after, at = _counters(setup.dsn)
            window_s = at - counted_at
            writes = Counter(
                {k: v - round(background[k] * window_s / idle_s) for k, v in (after - counters).items()}
            )
            writes["transactions"] -= burst.peaks.samples  # the sampler's own
            statuses = reply_statuses(setup.dsn, [c for _, c in sends[(n, kind)]])
            saved = Counter(
                f"{o.end} / {statuses.get(c, 'no reply')}"
                for o, (_, c) in zip(burst.outcomes, sends[(n, kind)], strict=True)
            )
            measured[(n, kind)] = Measured(burst, writes, saved)
            counters, counted_at = after, at
    return measured, background, idle_s


def _print(
    args: argparse.Namespace,
    measured: dict[tuple[int, str], Measured],
    background: Counter[str],
    idle_s: float,
) -> None:
    print()
    print(
        f"stream_burst: {args.workers} workers each, fake model {args.stream_chunks} chunks every"
        f" {args.chunk_interval_ms} ms, sends spread over {args.burst_spread:g} s"
    )
    idle = ", ".join(f"{k} {v / idle_s:.2f}/s" for k, v in sorted(background.items()) if v > 0)
    print(f"  background, both servers idle (subtracted below): {idle or 'none'}")
    for (n, kind), m in measured.items():
        b = m.burst
        done = b.seconds("done")
        print(
            f"  N={n} {kind:<5} done {b.count('done')}, error {b.count('error')} {dict(b.codes('error'))},"
            f" refused {b.count('refused')} {dict(b.codes('refused'))}, other {dict(b.others())};"
            f" to done p50 {percentile(done, 50):.2f} s p99 {percentile(done, 99):.2f} s"
        )
        print(
            f"  {'':11}CPU ms/reply: API {m.cpu_ms(SERVER_NAMES[kind]):.2f},"
            f" Postgres {m.cpu_ms('postgres'):.2f}, client {m.cpu_ms('client'):.2f},"
            f" fake model {m.cpu_ms('fake-model'):.2f};"
            f" peak connections {b.peaks.connections},"
            f" RSS {b.peaks.rss_mib:.0f} MiB (largest process {b.peaks.rss_one_mib:.0f})"
        )
        per_table = ", ".join(
            f"{k} {m.per_reply(k):.2f}" for k in sorted(m.writes) if k != "transactions" and m.writes[k] > 0
        )
        print(f"  {'':11}streams by end / reply saved: {dict(m.saved.most_common())}")
        errors = [o for o in b.outcomes if o.end == "error"]
        if errors:
            at = [o.seconds for o in errors]
            print(
                f"  {'':11}error events {min(at):.1f}-{max(at):.1f} s after the send (median"
                f" {percentile(at, 50):.1f}), after {percentile([o.deltas for o in errors], 50):.0f} deltas"
                f" (median; min {min(o.deltas for o in errors)}, max {max(o.deltas for o in errors)})"
            )
        print(f"  {'':11}per reply: transactions {m.per_reply('transactions'):.2f}; {per_table}")


# What makes log lines of one kind differ: time, process id, request id, message ids.
_LOG_NOISE = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,]+ |\[\d+\] |\b[0-9a-f]{32}\b |[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
)


def _print_logs(logs: dict[str, list[str]]) -> None:
    """The servers' log lines by kind (ids and times left out), most frequent first."""
    for server, lines in logs.items():
        kinds = Counter(_LOG_NOISE.sub("", line)[:150] for line in lines)
        print(f"  {server} log, {len(lines)} line(s) by kind:")
        for line, count in kinds.most_common(6):
            print(f"    {count:6d}  {line}")


def _codes(m: Measured, end: str) -> str:
    return ", ".join(f"{code or '?'} x{k}" for code, k in m.burst.codes(end).most_common())


def _rows(n: int, app: Measured, floor: Measured) -> list[Row]:
    """The summary rows of the bursts of N=n (the targets of issue #17)."""
    a, f = app.burst, floor.burst
    every = Goal("app", ">=", n, "")
    none = Goal("app", "<=", 0, "")
    api = SERVER_NAMES
    rows = [
        ("replies done", "n", a.count("done"), f.count("done"), every, ""),
        ("ended with error", "n", a.count("error"), f.count("error"), none, _codes(app, "error")),
        ("refused", "n", a.count("refused"), f.count("refused"), none, _codes(app, "refused")),
        *(
            (
                f"time to done p{p}",
                "ms",
                percentile(a.seconds("done"), p) * 1000,
                percentile(f.seconds("done"), p) * 1000,
                None,
                "",
            )
            for p in (50, 99)
        ),
        (
            "API CPU per reply",
            "ms",
            app.cpu_ms(api["app"]),
            floor.cpu_ms(api["floor"]),
            Goal("app/floor", "<=", 1.3),
            "",
        ),
        (
            "Postgres CPU per reply",
            "ms",
            app.cpu_ms("postgres"),
            floor.cpu_ms("postgres"),
            Goal("app/floor", "<=", 2),
            "",
        ),
        (
            "transactions per reply",
            "n",
            app.per_reply("transactions"),
            floor.per_reply("transactions"),
            None,
            "",
        ),
        ("rows written per reply", "n", app.rows_per_reply(), floor.rows_per_reply(), None, ""),
        ("peak Postgres connections", "n", a.peaks.connections, f.peaks.connections, None, ""),
        ("peak RSS, all processes", "MiB", a.peaks.rss_mib, f.peaks.rss_mib, None, ""),
    ]
    return [
        Row(NAME, f"N={n} {measure}", unit, va, vf, goal=goal, note=note)
        for measure, unit, va, vf, goal, note in rows
    ]


def run(args: argparse.Namespace) -> list[Row]:
    files = raise_open_files_limit()
    if files < 3 * max(args.burst_users) + 100:
        print(
            f"  warning: {files} open files allowed; a burst of {max(args.burst_users)} may run out",
            file=sys.stderr,
        )
    with BenchSession(NAME) as session:
        setup = _start(session, args)
        measured, background, idle_s = _measure(setup, args)
        logs = session.server_log_report()
    _print(args, measured, background, idle_s)
    _print_logs(logs)
    data = {
        "bursts": {
            f"{n} {kind}": {
                "outcomes": Counter(f"{o.end} {o.status} {o.code}".strip() for o in m.burst.outcomes),
                "cpu_ms_per_reply": {p: m.cpu_ms(p) for p in m.burst.cpu_after},
                "writes": dict(m.writes),
                "peaks": vars(m.burst.peaks),
            }
            for (n, kind), m in measured.items()
        },
        "background_per_s": {k: v / idle_s for k, v in background.items()},
    }
    title = (
        f"{NAME} ({args.workers} workers each; app: avatar-chat, floor: relay floor; fake model"
        f" {args.stream_chunks} x {args.chunk_interval_ms} ms; sends over {args.burst_spread:g} s)"
    )
    rows = [row for n in args.burst_users for row in _rows(n, measured[(n, "app")], measured[(n, "floor")])]
    return conclude(NAME, title, args, rows, data, logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
