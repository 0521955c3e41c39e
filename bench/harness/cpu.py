"""CPU time and memory of process trees from /proc: what each server, pgbouncer, Postgres
and the load client spent per request, and how much memory a server's processes hold."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                pids.extend(_tree(int(child)))
    except OSError:
        pass
    return pids


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime


def rss_mib(pid: int) -> list[float]:
    """The resident memory (MiB) of each process of `pid`'s tree, `pid` first."""
    sizes = []
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


class CpuMeter:
    """User+system CPU seconds of process trees (Linux /proc), and of this process's
    waited-for children (the load generator). Processes that exit in between are lost,
    which is fine for long-lived servers and pooled Postgres backends."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.available = Path("/proc/self/stat").exists()

    def snapshot(self) -> dict[str, float]:
        if not self.available:
            return {}
        out = {name: sum(_cpu_seconds(p) for p in _tree(pid)) for name, pid in self.roots.items()}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        out["client"] = usage.ru_utime + usage.ru_stime + own.ru_utime + own.ru_stime
        return out

    @staticmethod
    def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
        if not requests:
            return {}
        return {name: (after[name] - before.get(name, 0.0)) * 1000 / requests for name in after}
