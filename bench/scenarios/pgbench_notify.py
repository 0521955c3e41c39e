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

    .venv/bin/python -m bench.scenarios.pgbench_notify [--pgbench-seconds 10] [--rounds 2]

Reports tps of both and full/notify. (BENCH_DATABASE_URL: needs the right to create
databases, and `pgbench` on PATH.)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys

from avatar_chat.ops.migrate import default_migrations_dir, discover
from bench.harness.cli import scenario_main
from bench.harness.database import query
from bench.harness.pgbench import compare, conclude_comparison, prepare_variants, write_script
from bench.harness.report import Row
from bench.harness.session import BenchSession

NAME = "pgbench_notify"
LAST_WITH_NOTIFY = "20261201100000"
DATABASES = {"notify": "bench_notify", "full": "bench_full"}
LABELS = {"notify": f"with avatars_notify (up to {LAST_WITH_NOTIFY})", "full": "fully migrated (no NOTIFY)"}

_SCRIPT = """\\set u random(1, {users})
\\set p random(1, {personalities})
update public.avatars set personality = (enum_range(null::public.personality_type))[:p]
 where user_id = ('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid
 returning id, user_id, name, personality::text as personality, backstory, version, created_at, updated_at;
"""


def _has_notify_trigger(dsn: str) -> bool:
    sql = "select exists (select from pg_trigger where tgname = 'avatars_notify') as found"
    (row,) = asyncio.run(query(dsn, sql))
    return bool(row["found"])


def run(args: argparse.Namespace) -> list[Row]:
    with BenchSession(NAME) as session:
        notify_folder = session.tmp / "migrations-notify"
        notify_folder.mkdir()
        for migration in discover(default_migrations_dir()):
            if migration.version <= LAST_WITH_NOTIFY:
                shutil.copy(migration.path, notify_folder / migration.path.name)
        databases = {
            "notify": (DATABASES["notify"], notify_folder),
            "full": (DATABASES["full"], default_migrations_dir()),
        }
        variants = prepare_variants(session, args, databases, LABELS)
        triggers = {key: _has_notify_trigger(v.dsn) for key, v in variants.items()}
        if triggers != {"notify": True, "full": False}:
            raise RuntimeError(f"expected the avatars_notify trigger in bench_notify only: {triggers}")
        script = write_script(session, "update-avatar.sql", _SCRIPT, args.users)
        compared = compare(session, args, variants, script, "UPDATE public.avatars ... RETURNING")
    rows = {"notify": "with notify trigger", "full": "fully migrated"}
    return conclude_comparison(NAME, args, compared, "UPDATE avatars", rows, ("full", "notify"))


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
