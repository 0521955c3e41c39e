"""Measuring several servers under the same closed-loop load, in the same run: warm-up
each, then `--rounds` rounds of `--seconds` each, the order reversed every other round
so that machine noise (2 shared cores) does not favour whoever runs first."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.cli import step
from bench.harness.load import (
    Load,
    RequestSet,
    aggregate,
    run_python_client,
    run_wrk,
    write_wrk_script,
    wrk_path,
)
from bench.harness.report import fmt_load, fmt_ratio
from bench.harness.servers import Server
from bench.harness.session import BenchSession


@dataclass(frozen=True)
class Target:
    key: str  # "app", "floor", "hello", "app_pooled" ...
    label: str  # what it is, as printed
    server: Server
    requests: RequestSet


@dataclass
class Measured:
    targets: list[Target]
    runs: dict[str, list[Load]] = field(default_factory=dict)
    warmups: dict[str, list[Load]] = field(default_factory=dict)

    def total(self, key: str) -> Load:
        return aggregate(self.runs[key])

    def ok(self, key: str) -> int:
        """2xx answers counted, warm-up included (for the database checks)."""
        return sum(r.ok for r in self.runs[key] + self.warmups.get(key, []))

    def cpu_ms(self, key: str, process: str) -> float:
        """CPU ms per request of `process` during `key`'s runs, averaged over the rounds."""
        return statistics.fmean(run.cpu_ms_per_request.get(process, 0.0) for run in self.runs[key])

    def run_count(self, key: str) -> int:
        return len(self.runs[key]) + len(self.warmups.get(key, []))

    def as_json(self) -> dict[str, Any]:
        return {
            key: {
                "label": next(t.label for t in self.targets if t.key == key),
                "total": self.total(key).as_json(),
                "rounds": [r.as_json() for r in loads],
                "warmup": [r.as_json() for r in self.warmups.get(key, [])],
            }
            for key, loads in self.runs.items()
        }


def load_client(args: argparse.Namespace, *, python_fallback: bool) -> str:
    """The wrk binary, or "python" (bench.harness.loadgen) where the benchmark allows it (only
    such a benchmark reads `--client`)."""
    wanted = args.client if python_fallback else "wrk"
    wrk = wrk_path() if wanted in ("auto", "wrk") else None
    if wrk is not None:
        return wrk
    if wanted != "wrk":
        return "python"
    raise RuntimeError("wrk is not installed (./scripts/system-deps installs it; apt-get install -y wrk)")


def tool_name(client: str) -> str:
    return "python" if client == "python" else "wrk"


def measure(
    session: BenchSession,
    name: str,
    targets: list[Target],
    args: argparse.Namespace,
    *,
    connections: int,
    client: str,
    affinity: bool = False,
    also_metered: Sequence[Server] = (),
    settle: Callable[[Target], int] | None = None,
) -> Measured:
    """Warm-up, then the rounds; CPU time per request of every process tree for each run
    (the targets' servers, `also_metered` (e.g. a fake model), pgbouncer, Postgres, the client).

    Without `settle`, a run's CPU is what the processes spent while the client ran, over
    the answers it got: the requests still in flight when it stopped have cost something
    and are not counted, and they finish during the next run (another server's). With
    `settle(target)`, which waits until none of the target's requests is in flight and
    answers how many it has completed so far (e.g. rows in the database), CPU is counted
    from a settled start to a settled end, over the requests completed in between
    (`Load.completed`): nothing of one run spills into the next or goes uncounted."""
    meter = session.cpu_meter([*(t.server for t in targets), *also_metered])
    scripts: dict[str, Path] = {}
    if client != "python":
        scripts = {
            t.key: write_wrk_script(session.tmp, f"{name}-{t.key}", t.requests, affinity=affinity)
            for t in targets
        }
    measured = Measured(targets, {t.key: [] for t in targets})

    def once(target: Target, seconds: float) -> Load:
        done = settle(target) if settle is not None else 0
        before = meter.snapshot()
        if client == "python":
            load = run_python_client(target.requests, target.server.port, seconds, connections)
        else:
            load = run_wrk(
                client, scripts[target.key], target.server.base_url, seconds, connections, affinity=affinity
            )
        if settle is not None:
            load.completed = settle(target) - done
        count = load.requests if load.completed is None else load.completed
        load.cpu_ms_per_request = meter.per_request_ms(before, meter.snapshot(), count)
        return load

    if args.warmup > 0:
        for target in targets:
            with step(f"{name}: warm-up {target.key} {args.warmup:g} s"):
                measured.warmups.setdefault(target.key, []).append(once(target, args.warmup))
    tool = tool_name(client)
    for round_no in range(args.rounds):
        order = targets if round_no % 2 == 0 else targets[::-1]
        for target in order:
            with step(f"{name}: round {round_no + 1}/{args.rounds}: {target.key} {args.seconds:g} s, {tool}"):
                measured.runs[target.key].append(once(target, args.seconds))
    return measured


def print_rounds(measured: Measured, ratios: list[tuple[str, str]]) -> None:
    """Each round's line per server, then the ratios (e.g. ("app", "floor")) of that round."""
    rounds = len(next(iter(measured.runs.values())))
    width = max(len(t.label) for t in measured.targets) + 2
    for i in range(rounds):
        if rounds > 1:
            print(f"  round {i + 1}")
        for target in measured.targets:
            print(f"    {target.label:<{width}}{fmt_load(measured.runs[target.key][i])}")
        parts = [
            f"{a}/{b} {fmt_ratio(measured.runs[a][i].rps / measured.runs[b][i].rps)}"
            for a, b in ratios
            if measured.runs[b][i].rps
        ]
        print("    throughput " + ", ".join(parts))
