"""One way to print figures: a line per load run, and the summary table every scenario
(and `python -m bench all`) ends with.

A summary row is one measured thing with the API's figure (`app`), its database floor's
(`floor`) and hello world's (`hello`), where measured; the ratios app/floor and
app/hello; and the design target that applies, with whether this run met it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench.harness.load import Load
from bench.harness.results import machine_info, print_code_version, write_results

Subject = Literal["app/floor", "app/hello", "app", "floor"]


@dataclass(frozen=True)
class Goal:
    """`subject op value`, e.g. app/floor >= 0.85."""

    subject: Subject
    op: Literal[">=", "<="]
    value: float
    unit: str = "x"  # of `value`, as printed

    def __str__(self) -> str:
        return f"{self.subject} {self.op} {self.value:g}{self.unit}"


@dataclass(frozen=True)
class Row:
    scenario: str
    measure: str
    unit: str  # "req/s", "ms", "tps", "x" (a ratio) ...
    app: float | None = None
    floor: float | None = None
    hello: float | None = None
    goal: Goal | None = None
    note: str = ""  # e.g. errors seen while measuring it

    @property
    def app_floor(self) -> float | None:
        return _ratio(self.app, self.floor)

    @property
    def app_hello(self) -> float | None:
        return _ratio(self.app, self.hello)

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        value = {
            "app/floor": self.app_floor,
            "app/hello": self.app_hello,
            "app": self.app,
            "floor": self.floor,
        }[self.goal.subject]
        if value is None or math.isnan(value):
            return None
        return value >= self.goal.value if self.goal.op == ">=" else value <= self.goal.value

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "measure": self.measure,
            "unit": self.unit,
            "app": self.app,
            "floor": self.floor,
            "hello": self.hello,
            "app_floor": self.app_floor,
            "app_hello": self.app_hello,
            "target": str(self.goal) if self.goal else None,
            "met": self.met,
            "note": self.note,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_value(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "ms":
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    if unit == "us":
        return f"{value:.1f}"
    return f"{value:.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def table(rows: Sequence[Row], *, with_scenario: bool = False) -> str:
    head = ["measure", "unit", "app", "floor", "hello", "app/floor", "app/hello", "target", "met", "note"]
    if with_scenario:
        head.insert(0, "scenario")
    lines = []
    for r in rows:
        met = {None: "", True: "met", False: "NOT met"}[r.met]
        cells = [
            r.measure,
            r.unit,
            fmt_value(r.app, r.unit),
            fmt_value(r.floor, r.unit),
            fmt_value(r.hello, r.unit),
            fmt_ratio(r.app_floor),
            fmt_ratio(r.app_hello),
            str(r.goal) if r.goal else "",
            met,
            r.note,
        ]
        if with_scenario:
            cells.insert(0, r.scenario)
        lines.append(cells)
    widths = [max(len(c) for c in column) for column in zip(head, *lines, strict=True)]
    numeric = {"app", "floor", "hello", "app/floor", "app/hello"}

    def render(cells: list[str]) -> str:
        out = [
            c.rjust(w) if h in numeric else c.ljust(w) for c, w, h in zip(cells, widths, head, strict=True)
        ]
        return "  " + "  ".join(out).rstrip()

    rule = "  " + "  ".join("-" * w for w in widths)
    return "\n".join([render(head), rule, *(render(c) for c in lines)])


def print_summary(title: str, rows: Sequence[Row], *, with_scenario: bool = False) -> None:
    print()
    print(f"summary: {title}")
    print(table(rows, with_scenario=with_scenario))


def fmt_load(load: Load) -> str:
    """One line (two with CPU figures) for one load run."""
    errors = f", non-2xx {load.non_2xx}" if load.non_2xx else ""
    if load.transport_errors:
        errors += f", transport errors {load.transport_errors}"
    cpu = ", ".join(f"{k} {v:.3f}" for k, v in load.cpu_ms_per_request.items())
    completed = "" if load.completed is None else f", {load.completed} completed"
    per = "request" if load.completed is None else "completed request"
    return (
        f"{load.rps:8.0f} req/s   p50 {load.p50_ms:6.2f} ms   p99 {load.p99_ms:7.2f} ms"
        f"   ({load.requests} requests in {load.seconds:.1f} s{errors}{completed})"
        + (f"\n{'':36}CPU ms/{per}: {cpu}" if cpu else "")
    )


def conclude(
    name: str,
    title: str,
    args: argparse.Namespace,
    rows: list[Row],
    data: dict[str, Any],
    logs: dict[str, list[str]],
) -> list[Row]:
    """The end of every scenario: server log lines, the summary table, the JSON file."""
    for server, lines in logs.items():
        print(f"  {server} log: {len(lines)} line(s); first: {lines[0][:200]}")
    print_summary(title, rows)
    print_code_version()
    if not args.no_json:
        result = {
            "benchmark": name,
            "settings": vars(args),
            "machine": machine_info(),
            "summary": [r.as_json() for r in rows],
            "server_logs": {server: lines[:200] for server, lines in logs.items()},
            **data,
        }
        print(f"  results: {write_results(name, result)}")
    return rows


def load_note(*loads: Load | None) -> str:
    """Errors seen in these runs, for the table's note column."""
    bad = sum(load.non_2xx for load in loads if load is not None)
    transport = sum(sum(load.transport_errors.values()) for load in loads if load is not None)
    parts = ([f"{bad} non-2xx"] if bad else []) + ([f"{transport} transport errors"] if transport else [])
    return ", ".join(parts)


def throughput_rows(
    scenario: str,
    label: str,
    app: Load,
    floor: Load | None,
    hello: Load | None,
    goal: Goal | None,
    unit: str = "req/s",
) -> list[Row]:
    """Throughput (with the goal) and latency p50/p99 of one workload."""

    def get(load: Load | None, name: str) -> float | None:
        return None if load is None else float(getattr(load, name))

    note = load_note(app, floor, hello)
    return [
        Row(
            scenario,
            f"{label} throughput",
            unit,
            app.rps,
            get(floor, "rps"),
            get(hello, "rps"),
            goal,
            note,
        ),
        Row(scenario, f"{label} p50", "ms", app.p50_ms, get(floor, "p50_ms"), get(hello, "p50_ms")),
        Row(scenario, f"{label} p99", "ms", app.p99_ms, get(floor, "p99_ms"), get(hello, "p99_ms")),
    ]
