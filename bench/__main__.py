"""Run the benchmarks: `python -m bench [SCENARIO|all] [options]` (what `./bench/run` calls).

Scenarios, in the order `all` runs them (each with its own embedded Postgres, servers
and, for `pooled`, pgbouncer, all stopped at its end):

    persona_patch         PATCH /avatars/me/persona throughput vs its database floor and hello
    chat_turn_throughput  concurrent chat turns (JSON) throughput vs their floor and hello
    chat_turn_latency     one turn's latency, sequential: server time beyond hello and the floor
    sse_ttfb              streamed turns: time to first byte and first delta vs the floor
    pooled                persona_patch and chat_turn_throughput direct vs through pgbouncer
                          (transaction mode)
    pgbench_notify        pgbench on the persona UPDATE with and without the old NOTIFY trigger
    pgbench_act_as        pgbench on the API's persona statement with and without act_as's
                          user check
    partial_saves         what saving a reply's text while it streams costs a chat turn
    observability         metrics and request ids on vs off vs none: PATCH and chat turn
                          throughput
    stream_burst          hundreds of streamed replies at once, paced by a fake model: CPU
                          per reply, failures, connections vs the relay floor
    turn_statements       every statement of a streamed turn (pg_stat_statements, PostgreSQL 15):
                          calls, rows, exec time per turn vs the relay floor
    abuse                 one token doing every expensive thing at once (followers, 36 MP
                          uploads, regenerations, many streams) while 20 users chat, at the
                          default per-user limits: their turn times with and without it
    moderation_cost       chat turns with the offline moderation vs none vs safety off (no
                          notices either): API and Postgres CPU per turn, turns/s
    quota_cost            chat turns of users on a plan with every quota set vs users on a
                          plan with none (one server): turns/s, API and Postgres CPU per turn
    export_memory         GET /me/export of a 100,000-message account vs a 1,000-message one
                          (one worker): worker RSS growth, first byte, time, CPU per message

Every scenario prints its figures and a summary table; `all` ends with one table of them
all. Options are shared; each says which scenarios read it.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench.harness.cli import add_common_args, run_main
from bench.harness.report import Row, print_summary
from bench.harness.results import machine_info, print_code_version, write_results
from bench.scenarios import (
    abuse,
    chat_turn_latency,
    chat_turn_throughput,
    export_memory,
    moderation_cost,
    observability,
    partial_saves,
    persona_patch,
    pgbench_act_as,
    pgbench_notify,
    pooled,
    quota_cost,
    sse_ttfb,
    stream_burst,
    turn_statements,
)

SCENARIOS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "persona_patch": persona_patch.run,
    "chat_turn_throughput": chat_turn_throughput.run,
    "chat_turn_latency": chat_turn_latency.run,
    "sse_ttfb": sse_ttfb.run,
    "pooled": pooled.run,
    "pgbench_notify": pgbench_notify.run,
    "pgbench_act_as": pgbench_act_as.run,
    "partial_saves": partial_saves.run,
    "observability": observability.run,
    "stream_burst": stream_burst.run,
    "turn_statements": turn_statements.run,
    "abuse": abuse.run,
    "moderation_cost": moderation_cost.run,
    "quota_cost": quota_cost.run,
    "export_memory": export_memory.run,
}
# Names these scenarios had before (two that differed by one letter).
RENAMED = {"chat_turns": "chat_turn_throughput", "chat_turn": "chat_turn_latency"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", nargs="?", default="all", choices=[*SCENARIOS, "all"])
    add_common_args(parser)
    abuse.add_arguments(parser)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RENAMED:
        parser.error(f"{argv[0]} is now called {RENAMED[argv[0]]}")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    rows: list[Row] = []
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in names:
        start = time.monotonic()
        print(f"\n=== {name}", flush=True)
        try:
            rows += SCENARIOS[name](args)
        except Exception as exc:  # report it, go on with the next scenario
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
        seconds[name] = time.monotonic() - start
        print(f"  ({name} took {seconds[name]:.0f} s)", flush=True)
    if len(names) > 1:
        print_summary(
            f"all ({', '.join(f'{n} {s:.0f} s' for n, s in seconds.items())})", rows, with_scenario=True
        )
        print_code_version()
        for name, error in failed.items():
            print(f"  FAILED {name}: {error[:300]}")
        if not args.no_json:
            result = {
                "benchmark": "all",
                "settings": vars(args),
                "machine": machine_info(),
                "seconds": seconds,
                "summary": [r.as_json() for r in rows],
                "failed": failed,
            }
            print(f"  results: {write_results('all', result)}")
    elif failed:
        print(f"FAILED {names[0]}: {failed[names[0]][:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
