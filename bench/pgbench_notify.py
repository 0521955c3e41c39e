"""What the old `avatars_notify` trigger cost the database: pgbench running the floor's
persona UPDATE on a schema that still has it and on the current one.

Two fresh databases in the same embedded cluster: `bench_notify`, migrated up to and
including `20261201100000_act_as_and_error_protocol.sql` (its `avatars_notify` trigger
NOTIFYs on every update; a transaction with a pending notification takes an
instance-wide lock at commit), and `bench_full`, migrated fully (no NOTIFY on any write
path). Each gets `--users` (64) users with avatars. pgbench (the embedded PostgreSQL's
own) runs `--pgbench-clients` (32) clients on 2 threads for `--pgbench-seconds` (10),
query protocol `--pgbench-protocol` (prepared), no vacuum, a custom script with the same
statement the database floor's PATCH makes for a random user:

    update public.avatars set personality = ... where user_id = ... returning ...

The two databases alternate over `--rounds` (after a `--warmup` run each).

    .venv/bin/python -m bench.pgbench_notify [--pgbench-seconds 10] [--rounds 2]

Reports tps of both and full/notify. (BENCH_DATABASE_URL: needs the right to create
databases, and `pgbench` on PATH.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from avatar_chat.core.migrate import default_migrations_dir, discover, migrate
from bench.common import PERSONALITIES, BenchSession, scenario_main, step
from bench.report import Row, conclude
from bench.workloads import query

NAME = "pgbench_notify"
LAST_WITH_NOTIFY = "20261201100000"
DATABASES = {"notify": "bench_notify", "full": "bench_full"}

_SCRIPT = """\\set u random(1, {users})
\\set p random(1, {personalities})
update public.avatars set personality = (enum_range(null::public.personality_type))[:p]
 where user_id = ('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid
 returning id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at;
"""


def user_id(n: int) -> str:
    """The users' ids, as the pgbench script computes them from 1..N."""
    return f"00000000-0000-4000-8000-{n:012d}"


def pgbench_path(session: BenchSession) -> str:
    """The embedded cluster's pgbench (same major version), else the one on PATH."""
    embedded = session.postgres_bin()
    if embedded is not None and (embedded / "pgbench").exists():
        return str(embedded / "pgbench")
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError(
            "pgbench not found (the embedded PostgreSQL ships one; or install postgresql-client)"
        )
    return found


def database_dsn(dsn: str, name: str) -> str:
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


def libpq_env(dsn: str) -> dict[str, str]:
    """PGHOST and friends for the database `dsn` names (a socket folder or a host)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    env = {
        "PGHOST": query.get("host", [parts.hostname or "127.0.0.1"])[0],
        "PGPORT": query.get("port", [str(parts.port or 5432)])[0],
        "PGUSER": unquote(parts.username or "postgres"),
        "PGDATABASE": parts.path.lstrip("/") or "postgres",
    }
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    return env


async def prepare(dsn: str, name: str, migrations: Path, users: int) -> bool:
    """A fresh database `name`, migrated with `migrations`, with users and avatars;
    returns whether it has the avatars_notify trigger."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'drop database if exists "{name}"')
        await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    target = database_dsn(dsn, name)
    await migrate(target, migrations)
    conn = await asyncpg.connect(target)
    try:
        ids = [user_id(n) for n in range(1, users + 1)]
        await conn.execute(
            "insert into auth.users (id, email) select i::uuid, 'pgbench-' || i || '@example.test'"
            " from unnest($1::text[]) i",
            ids,
        )
        await conn.execute(
            "insert into public.avatars (user_id, name, personality, backstory)"
            " select i::uuid, 'Bench', 'friendly', 'A benchmark avatar.' from unnest($1::text[]) i",
            ids,
        )
        await conn.execute("vacuum analyze public.avatars")
        has_trigger: bool = await conn.fetchval(
            "select exists (select from pg_trigger where tgname = 'avatars_notify')"
        )
        return has_trigger
    finally:
        await conn.close()


def total_version(dsn: str) -> int:
    (row,) = asyncio.run(query(dsn, "select coalesce(sum(version), 0) as n from public.avatars"))
    return int(row["n"])


def run_pgbench(
    pgbench: str, dsn: str, script: Path, clients: int, seconds: float, protocol: str
) -> dict[str, Any]:
    argv = [
        pgbench,
        "-n",
        "-M",
        protocol,
        f"-c{clients}",
        f"-j{min(2, clients)}",
        f"-T{max(1, round(seconds))}",
        "-f",
        str(script),
    ]
    env = {**os.environ, **libpq_env(dsn)}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=seconds + 120)
    tps = re.search(r"^tps = ([\d.]+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def number(pattern: str) -> float | None:
        match = re.search(pattern, proc.stdout, re.MULTILINE)
        return float(match.group(1)) if match else None

    return {
        "tps": float(tps.group(1)),
        "transactions": number(r"^number of transactions actually processed: (\d+)"),
        "failed": number(r"^number of failed transactions: (\d+)"),
        "latency_avg_ms": number(r"^latency average = ([\d.]+) ms"),
    }


def run(args: argparse.Namespace) -> list[Row]:
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in DATABASES}
    with BenchSession(NAME) as session:
        with step("database cluster"):
            dsn = session.database()
        pgbench = pgbench_path(session)
        folders = {"notify": session.tmp / "migrations-notify", "full": default_migrations_dir()}
        folders["notify"].mkdir()
        for migration in discover(default_migrations_dir()):
            if migration.version <= LAST_WITH_NOTIFY:
                shutil.copy(migration.path, folders["notify"] / migration.path.name)
        triggers: dict[str, bool] = {}
        for key, name in DATABASES.items():
            with step(f"database {name}: migrations from {folders[key]}, {args.users} avatars"):
                triggers[key] = asyncio.run(prepare(dsn, name, folders[key], args.users))
        if triggers != {"notify": True, "full": False}:
            raise RuntimeError(f"expected the avatars_notify trigger in bench_notify only: {triggers}")
        script = session.tmp / "update-avatar.sql"
        script.write_text(_SCRIPT.format(users=args.users, personalities=len(PERSONALITIES)))
        target = {key: database_dsn(dsn, name) for key, name in DATABASES.items()}

        def once(key: str, seconds: float) -> dict[str, Any]:
            return run_pgbench(
                pgbench, target[key], script, args.pgbench_clients, seconds, args.pgbench_protocol
            )

        if args.warmup > 0:
            for key in DATABASES:
                with step(f"warm-up {key} {args.warmup:g} s"):
                    once(key, args.warmup)
        versions_before = {key: total_version(target[key]) for key in DATABASES}
        for round_no in range(args.rounds):
            order = list(DATABASES) if round_no % 2 == 0 else list(DATABASES)[::-1]
            for key in order:
                with step(f"round {round_no + 1}/{args.rounds}: {DATABASES[key]} {args.pgbench_seconds:g} s"):
                    runs[key].append(once(key, args.pgbench_seconds))

        versions = {key: total_version(target[key]) - versions_before[key] for key in DATABASES}

    tps = {key: sum(r["tps"] for r in rs) / len(rs) for key, rs in runs.items()}
    print()
    print(
        f"pgbench_notify: pgbench -c{args.pgbench_clients} -j2 -M {args.pgbench_protocol},"
        f" {args.pgbench_seconds:g} s"
        f" x {args.rounds} round(s), UPDATE public.avatars ... RETURNING for a random one of {args.users}"
    )
    labels = {"notify": "with avatars_notify (up to 20261201100000)", "full": "fully migrated (no NOTIFY)"}
    for i in range(args.rounds):
        line = ", ".join(
            f"{labels[key]} {runs[key][i]['tps']:.0f} tps (avg {runs[key][i]['latency_avg_ms']} ms)"
            for key in DATABASES
        )
        print(f"  round {i + 1}: {line}")
    for key, name in DATABASES.items():
        counted = sum(int(r["transactions"] or 0) for r in runs[key])
        print(
            f"  database {name}: avatar versions advanced by {versions[key]} for {counted} transactions"
            " pgbench counted" + ("" if versions[key] == counted else "  <-- MISMATCH")
        )
    failed = sum(int(r["failed"] or 0) for rs in runs.values() for r in rs)
    note = f"{failed} failed transactions" if failed else ""
    rows = [
        Row(NAME, "pgbench UPDATE avatars, with notify trigger", "tps", floor=tps["notify"], note=note),
        Row(NAME, "pgbench UPDATE avatars, fully migrated", "tps", floor=tps["full"]),
        Row(NAME, "pgbench UPDATE avatars, full/notify", "x", floor=tps["full"] / tps["notify"]),
    ]
    title = (
        f"{NAME} (pgbench -c{args.pgbench_clients} -M {args.pgbench_protocol},"
        " database only: figures in the floor column)"
    )
    data = {"runs": runs, "tps_mean": tps, "db_version_increments": versions}
    return conclude(NAME, title, args, rows, data, {})


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
