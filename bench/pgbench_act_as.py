"""What refusing deleted users' tokens costs a persona switch in the database: pgbench
running the API's PATCH statement with `avatar_chat.act_as` as it is and as it was.

Since `20261201180000_avatar_images.sql`, `act_as(claims)` first checks that the token's
user still has an `auth.users` row (a primary-key probe) and raises AC401 user_not_found
otherwise, so a deleted account's token stops working at once on every worker. Two fresh
databases in the same embedded cluster, both migrated fully, each with `--users` (64)
users and avatars: `bench_user_check` as migrated, and `bench_no_user_check`, where
`act_as` is replaced by its definition before that migration (role and claims only).
pgbench (the embedded PostgreSQL's own) runs `--pgbench-clients` (32) clients on 2
threads for `--pgbench-seconds` (10), `--pgbench-protocol` (prepared), no vacuum, the
statement the API sends for `PATCH /avatars/me/persona` for a random user:

    select ... from avatar_chat.update_my_avatar(<claims>, '{"personality": ...}', null)

alternating over `--rounds` after a `--warmup` run each.

    .venv/bin/python -m bench.pgbench_act_as [--pgbench-seconds 10] [--rounds 2]

Reports tps of both and check/no_check (the share of the database's throughput the
check takes). (BENCH_DATABASE_URL: needs the right to create databases.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg

from avatar_chat.core.migrate import default_migrations_dir
from bench.common import PERSONALITIES, BenchSession, scenario_main, step
from bench.pgbench_notify import database_dsn, pgbench_path, prepare, run_pgbench, total_version
from bench.report import Row, conclude

NAME = "pgbench_act_as"
DATABASES = {"check": "bench_user_check", "no_check": "bench_no_user_check"}

# act_as as 20261201100000_act_as_and_error_protocol.sql defined it.
_WITHOUT_USER_CHECK = """
create or replace function avatar_chat.act_as(claims text)
returns void
language sql
volatile
set search_path = ''
as $$
  select set_config('role', 'authenticated', true), set_config('request.jwt.claims', claims, true);
$$;
"""

_SCRIPT = """\\set u random(1, {users})
\\set p random(1, {personalities})
select id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at
  from avatar_chat.update_my_avatar(
    '{{"sub": "00000000-0000-4000-8000-' || lpad(:u::text, 12, '0')
      || '", "role": "authenticated", "aud": "authenticated"}}',
    jsonb_build_object('personality', (enum_range(null::public.personality_type))[:p]),
    null);
"""


async def _drop_user_check(dsn: str) -> str:
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        await conn.execute(_WITHOUT_USER_CHECK)
        definition: str = await conn.fetchval("select prosrc from pg_proc where proname = 'act_as'")
        return definition
    finally:
        await conn.close()


async def _has_user_check(dsn: str) -> bool:
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        source: str = await conn.fetchval("select prosrc from pg_proc where proname = 'act_as'")
        return "auth.users" in source
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> list[Row]:
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in DATABASES}
    with BenchSession(NAME) as session:
        with step("database cluster"):
            dsn = session.database()
        pgbench = pgbench_path(session)
        target = {key: database_dsn(dsn, name) for key, name in DATABASES.items()}
        for name in DATABASES.values():
            with step(f"database {name}: migrations, {args.users} avatars"):
                asyncio.run(prepare(dsn, name, default_migrations_dir(), args.users))
        asyncio.run(_drop_user_check(target["no_check"]))
        checks = {key: asyncio.run(_has_user_check(target[key])) for key in DATABASES}
        if checks != {"check": True, "no_check": False}:
            raise RuntimeError(f"expected the user check in bench_user_check only: {checks}")
        script = session.tmp / "update-my-avatar.sql"
        script.write_text(_SCRIPT.format(users=args.users, personalities=len(PERSONALITIES)))

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
        f"{NAME}: pgbench -c{args.pgbench_clients} -j2 -M {args.pgbench_protocol}, {args.pgbench_seconds:g} s"
        f" x {args.rounds} round(s), avatar_chat.update_my_avatar(claims, personality) for a random one"
        f" of {args.users}"
    )
    labels = {"check": "act_as checks the user", "no_check": "act_as without the check"}
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
        Row(NAME, "pgbench update_my_avatar, act_as checks the user", "tps", floor=tps["check"], note=note),
        Row(NAME, "pgbench update_my_avatar, act_as without the check", "tps", floor=tps["no_check"]),
        Row(NAME, "pgbench update_my_avatar, check/no_check", "x", floor=tps["check"] / tps["no_check"]),
    ]
    title = (
        f"{NAME} (pgbench -c{args.pgbench_clients} -M {args.pgbench_protocol},"
        " database only: figures in the floor column)"
    )
    data = {"runs": runs, "tps_mean": tps, "db_version_increments": versions}
    return conclude(NAME, title, args, rows, data, {})


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
