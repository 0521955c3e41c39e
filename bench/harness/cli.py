"""The command line every scenario shares: one option set (each option names the
scenarios that read it), `python -m bench.scenarios.<name>`, Ctrl-C, progress lines."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator

_THROUGHPUT = "persona_patch, chat_turn_throughput, pooled, moderation_cost, quota_cost"
_SEQUENTIAL = "chat_turn_latency, sse_ttfb"
# flag, type, default, who reads it and what it is
_OPTIONS: tuple[tuple[str, type[int] | type[float], float, str], ...] = (
    ("--workers", int, 3, f"{_THROUGHPUT}: worker processes of every server"),
    ("--seconds", float, 5, f"{_THROUGHPUT}: measured seconds per server per round"),
    ("--warmup", float, 2, f"{_THROUGHPUT}, pgbench_notify: unmeasured seconds per server first"),
    (
        "--rounds",
        int,
        2,
        f"{_THROUGHPUT}, pgbench_notify, export_memory: measure each this many times, alternating the order",
    ),
    ("--connections", int, 32, "persona_patch, pooled: open connections for PATCH"),
    (
        "--turn-connections",
        int,
        64,
        "chat_turn_throughput, pooled, moderation_cost, quota_cost: open connections for chat turns",
    ),
    ("--users", int, 64, f"{_THROUGHPUT}, pgbench_notify: distinct users, each with an avatar"),
    (
        "--turns",
        int,
        200,
        f"{_SEQUENTIAL}: measured sequential turns per server; turn_statements: conversations per server",
    ),
    ("--conversations", int, 10, f"{_SEQUENTIAL}: conversations the turns rotate over"),
    ("--warmup-turns", int, 20, f"{_SEQUENTIAL}: unmeasured turns first"),
    ("--pool-size", int, 10, "pooled: pgbouncer server connections (default_pool_size)"),
    ("--chunk-delay-ms", int, 20, "partial_saves: the offline provider's pause between chunks"),
    (
        "--floor-window",
        int,
        20,
        "chat_turn_throughput, chat_turn_latency, sse_ttfb, pooled: messages the floor reads for each"
        " prompt (no cache); 0 = none, a floor that does less than a chat turn needs",
    ),
    ("--burst-spread", float, 5, "stream_burst: seconds a burst's sends are spread over"),
    ("--stream-chunks", int, 20, "stream_burst, turn_statements: chunks of each reply of the fake model"),
    ("--chunk-interval-ms", int, 500, "stream_burst: the fake model's pause before each chunk"),
    (
        "--stats-wait",
        float,
        11,
        "stream_burst, turn_statements: seconds for Postgres's counters to settle after a burst",
    ),
    ("--statement-interval-ms", int, 50, "turn_statements: the fake model's pause before each chunk"),
    ("--statement-streams", int, 10, "turn_statements: conversations whose turns run at once"),
    ("--pgbench-seconds", float, 10, "pgbench_notify: seconds per pgbench run"),
    ("--pgbench-clients", int, 32, "pgbench_notify: pgbench clients (-c)"),
    ("--export-messages", int, 100_000, "export_memory: messages of the large account"),
    ("--export-small", int, 1000, "export_memory: messages of the small account (the baseline)"),
    ("--export-per-conversation", int, 1000, "export_memory: messages per conversation"),
)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """One option set for every benchmark, so `bench/run [NAME] ARGS` can pass ARGS to
    each; every option names the benchmarks that read it."""
    for flag, kind, default, help_text in _OPTIONS:
        parser.add_argument(flag, type=kind, default=kind(default), help=f"{help_text} ({default:g})")
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="persona_patch: load generator; auto = wrk when installed, else the Python one"
        " (the other scenarios need wrk)",
    )
    parser.add_argument(
        "--pgbench-protocol",
        choices=("prepared", "simple", "extended"),
        default="prepared",
        help="pgbench_notify: pgbench's query protocol, -M (prepared)",
    )
    parser.add_argument(
        "--burst-users",
        type=_counts,
        default=(300, 1000),
        metavar="N[,N...]",
        help="stream_burst: the bursts, each N users sending at once (300,1000)",
    )
    parser.add_argument(
        "--no-follow-up",
        action="store_true",
        help="turn_statements: only the first turn of each conversation (no second send)",
    )
    parser.add_argument(
        "--no-json", action="store_true", help="do not write bench/results/<name>-<timestamp>.json"
    )


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"counts must be at least 1: {text!r}")
    return counts


def parse_args(prog: str, description: str | None, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    return parser.parse_args(argv)


def scenario_main(name: str, description: str | None, run: Callable[[argparse.Namespace], object]) -> int:
    """`python -m bench.scenarios.<name>`: the shared options, one scenario, 130 on Ctrl-C."""

    def main(argv: list[str] | None) -> int:
        run(parse_args(f"python -m bench.scenarios.{name}", description, argv))
        return 0

    return run_main(main)


def run_main(main: Callable[[list[str] | None], int]) -> int:
    """Run a benchmark's main; an interrupt (Ctrl-C, SIGTERM) exits 130 without a
    traceback, after BenchSession has stopped everything."""
    try:
        return main(None)
    except KeyboardInterrupt:
        print("interrupted; servers and database stopped", file=sys.stderr)
        return 130


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Progress on stderr, so stdout carries only the figures."""
    print(f"... {message}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"    done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
