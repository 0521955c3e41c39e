"""What refusing deleted users' tokens costs a persona switch in the database: pgbench
running the API's PATCH statement with `avatar_chat.act_as` as it is and as it was.

Since `20261201180000_avatar_images.sql`, `act_as(claims)` first checks that the token's
user still has an `auth.users` row (a primary-key probe) and raises AC401 user_not_found
otherwise, so a deleted account's token stops working at once on every worker. Two fresh
databases in the same embedded cluster, both migrated fully, each with `--users` (64)
users and avatars: `bench_user_check` as migrated, and `bench_no_user_check`, where
`act_as` is replaced by its definition in 20261201100000 (role and claims only).
pgbench (the embedded PostgreSQL's own) runs `--pgbench-clients` (32) clients on 2
threads for `--pgbench-seconds` (10), `--pgbench-protocol` (prepared), no vacuum, the
statement the API sends for `PATCH /avatars/me/persona` for a random user:

    select ... from avatar_chat.update_my_avatar(<claims>, '{"personality": ...}', null)

alternating over `--rounds` after a `--warmup` run each.

    .venv/bin/python -m bench.scenarios.pgbench_act_as [--pgbench-seconds 10] [--rounds 2]

Reports tps of both and check/no_check (the share of the database's throughput the
check takes). (BENCH_DATABASE_URL: needs the right to create databases.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from avatar_chat.ops.migrate import default_migrations_dir
from avatar_chat.ops.sqlsplit import split_and_trim
from bench.harness.cli import scenario_main
from bench.harness.database import query
from bench.harness.pgbench import compare, conclude_comparison, prepare_variants, write_script
from bench.harness.report import Row
from bench.harness.session import BenchSession

NAME = "pgbench_act_as"
DATABASES = {"check": "bench_user_check", "no_check": "bench_no_user_check"}
LABELS = {"check": "act_as checks the user", "no_check": "act_as without the check"}

# act_as before the check: its definition in this migration, replaced in place.
BEFORE_CHECK = "20261201100000_act_as_and_error_protocol.sql"


def _act_as_before_check() -> str:
    sql = (default_migrations_dir() / BEFORE_CHECK).read_text(encoding="utf-8")
    (statement,) = [s for s in split_and_trim(sql) if "\ncreate function avatar_chat.act_as(" in f"\n{s}"]
    return statement.replace("create function", "create or replace function", 1)


_SCRIPT = """\\set u random(1, {users})
\\set p random(1, {personalities})
select id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at
  from avatar_chat.update_my_avatar(
    '{{"sub": "00000000-0000-4000-8000-' || lpad(:u::text, 12, '0')
      || '", "role": "authenticated", "aud": "authenticated"}}',
    jsonb_build_object('personality', (enum_range(null::public.personality_type))[:p]),
    null);
"""


def _act_as_source(dsn: str) -> str:
    (row,) = asyncio.run(query(dsn, "select prosrc from pg_proc where proname = 'act_as'"))
    return str(row["prosrc"])


def run(args: argparse.Namespace) -> list[Row]:
    migrations = default_migrations_dir()
    with BenchSession(NAME) as session:
        variants = prepare_variants(
            session, args, {key: (name, migrations) for key, name in DATABASES.items()}, LABELS
        )
        asyncio.run(query(variants["no_check"].dsn, _act_as_before_check()))
        checks = {key: "auth.users" in _act_as_source(v.dsn) for key, v in variants.items()}
        if checks != {"check": True, "no_check": False}:
            raise RuntimeError(f"expected the user check in bench_user_check only: {checks}")
        script = write_script(session, "update-my-avatar.sql", _SCRIPT, args.users)
        compared = compare(
            session, args, variants, script, "avatar_chat.update_my_avatar(claims, personality)"
        )
    return conclude_comparison(NAME, args, compared, "update_my_avatar", LABELS, ("check", "no_check"))


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
