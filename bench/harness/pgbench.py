"""pgbench against databases of one cluster, rounds alternating: what the pgbench_*
scenarios share (the cluster's own pgbench, fresh migrated databases with users and
avatars, one run's figures, the comparison loop and its report)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from avatar_chat.ops.migrate import migrate
from bench.harness.cli import step
from bench.harness.database import query
from bench.harness.report import Row, conclude
from bench.harness.session import BenchSession
from bench.harness.users import PERSONALITIES


def user_id(n: int) -> str:
    """The users' ids, as the pgbench scripts compute them from 1..N."""
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


async def prepare(dsn: str, name: str, migrations: Path, users: int) -> str:
    """A fresh database `name`, migrated with `migrations`, with users 1..`users` (see
    `user_id`) and their avatars; returns its DSN."""
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
    finally:
        await conn.close()
    return target


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


@dataclass(frozen=True)
class Variant:
    """One database of the comparison: its name, its DSN, how the report calls it."""

    database: str
    dsn: str
    label: str


@dataclass(frozen=True)
class Compared:
    runs: dict[str, list[dict[str, Any]]]  # per variant, one pgbench result per round
    tps: dict[str, float]  # per variant, mean over the rounds
    versions: dict[str, int]  # per variant, how far the avatars' versions advanced
    failed: int  # failed transactions in all runs

    @property
    def note(self) -> str:
        return f"{self.failed} failed transactions" if self.failed else ""

    def data(self) -> dict[str, Any]:
        return {"runs": self.runs, "tps_mean": self.tps, "db_version_increments": self.versions}


def compare(
    session: BenchSession, args: argparse.Namespace, variants: dict[str, Variant], script: Path, what: str
) -> Compared:
    """pgbench `script` on each variant's database: a `--warmup` run each, then
    `--rounds` alternating; prints each round and checks every counted transaction
    advanced an avatar's version (`MISMATCH` otherwise). `what` names the statement."""
    pgbench = pgbench_path(session)
    keys = list(variants)

    def once(key: str, seconds: float) -> dict[str, Any]:
        return run_pgbench(
            pgbench, variants[key].dsn, script, args.pgbench_clients, seconds, args.pgbench_protocol
        )

    if args.warmup > 0:
        for key in keys:
            with step(f"warm-up {key} {args.warmup:g} s"):
                once(key, args.warmup)
    before = {key: total_version(variants[key].dsn) for key in keys}
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    for round_no in range(args.rounds):
        for key in keys if round_no % 2 == 0 else keys[::-1]:
            with step(
                f"round {round_no + 1}/{args.rounds}: {variants[key].database} {args.pgbench_seconds:g} s"
            ):
                runs[key].append(once(key, args.pgbench_seconds))
    versions = {key: total_version(variants[key].dsn) - before[key] for key in keys}

    print()
    print(
        f"pgbench -c{args.pgbench_clients} -j2 -M {args.pgbench_protocol}, {args.pgbench_seconds:g} s"
        f" x {args.rounds} round(s), {what} for a random one of {args.users} users"
    )
    for i in range(args.rounds):
        line = ", ".join(
            f"{variants[key].label} {runs[key][i]['tps']:.0f} tps (avg {runs[key][i]['latency_avg_ms']} ms)"
            for key in keys
        )
        print(f"  round {i + 1}: {line}")
    for key in keys:
        counted = sum(int(r["transactions"] or 0) for r in runs[key])
        print(
            f"  database {variants[key].database}: avatar versions advanced by {versions[key]} for {counted}"
            " transactions pgbench counted" + ("" if versions[key] == counted else "  <-- MISMATCH")
        )
    return Compared(
        runs=runs,
        tps={key: sum(r["tps"] for r in rs) / len(rs) for key, rs in runs.items()},
        versions=versions,
        failed=sum(int(r["failed"] or 0) for rs in runs.values() for r in rs),
    )


def prepare_variants(
    session: BenchSession,
    args: argparse.Namespace,
    databases: dict[str, tuple[str, Path]],
    labels: dict[str, str],
) -> dict[str, Variant]:
    """The session's cluster and, per variant, a fresh database (`databases[key]`: its name
    and the migrations folder to build it from) with `--users` users and avatars."""
    with step("database cluster"):
        dsn = session.database()
    for name, migrations in databases.values():
        with step(f"database {name}: migrations from {migrations}, {args.users} avatars"):
            asyncio.run(prepare(dsn, name, migrations, args.users))
    return {key: Variant(name, database_dsn(dsn, name), labels[key]) for key, (name, _) in databases.items()}


def write_script(session: BenchSession, file_name: str, template: str, users: int) -> Path:
    """A pgbench script from `template` (`{users}` and `{personalities}` filled in)."""
    script = session.tmp / file_name
    script.write_text(template.format(users=users, personalities=len(PERSONALITIES)))
    return script


def conclude_comparison(
    name: str,
    args: argparse.Namespace,
    compared: Compared,
    statement: str,
    labels: dict[str, str],
    ratio: tuple[str, str],
) -> list[Row]:
    """The rows (tps of each variant, `ratio[0]/ratio[1]`, all in the floor column: database
    only), the summary table and the JSON file."""
    tps = compared.tps
    rows = [
        Row(
            name, f"pgbench {statement}, {label}", "tps", floor=tps[key], note=compared.note if i == 0 else ""
        )
        for i, (key, label) in enumerate(labels.items())
    ]
    a, b = ratio
    rows.append(Row(name, f"pgbench {statement}, {a}/{b}", "x", floor=tps[a] / tps[b]))
    return conclude(name, title(name, args), args, rows, compared.data(), {})


def title(name: str, args: argparse.Namespace) -> str:
    return (
        f"{name} (pgbench -c{args.pgbench_clients} -M {args.pgbench_protocol},"
        " database only: figures in the floor column)"
    )
