"""A closed-loop HTTP/1.1 load generator for when wrk is not installed.

Runs in its own process (`python -m bench.harness.loadgen`, spec as JSON on stdin, result as
JSON on stdout) so it never shares an event loop or a GIL with the benchmark driver.
It speaks raw HTTP/1.1 over asyncio streams (uvloop when available) with keep-alive:
httpx costs several times more CPU per request, and on a small machine the client
would then be what is measured.

Each connection sends `requests[random user][n % variants]`: a random user per
request, the variants (e.g. personalities) alternating per connection.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class ProtocolError(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; (status, server wants the connection closed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and value.strip().lower() == b"close":
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    elif status not in (204, 304):
        raise ProtocolError("response without length")
    return status, close


async def _connection(
    port: int, requests: list[list[bytes]], deadline: float, stats: Stats, seed: int
) -> None:
    rng = random.Random(seed)
    variants = len(requests[0])
    n = seed  # stagger the alternation between connections
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError as exc:
                    stats.errors[f"connect: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            payload = requests[rng.randrange(len(requests))][n % variants]
            n += 1
            start = time.perf_counter()
            try:
                writer.write(payload)
                status, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as exc:
                stats.errors[f"read: {type(exc).__name__}"] += 1
                writer.close()
                writer = reader = None
                continue
            stats.latencies.append(time.perf_counter() - start)
            stats.statuses[status] += 1
            if close:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    requests = [[r.encode("latin-1") for r in variants] for variants in spec["requests"]]
    stats = Stats()
    start = time.perf_counter()
    deadline = start + float(spec["seconds"])
    await asyncio.gather(
        *(
            _connection(int(spec["port"]), requests, deadline, stats, seed)
            for seed in range(int(spec["connections"]))
        )
    )
    elapsed = time.perf_counter() - start
    ordered = sorted(stats.latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000 if ordered else 0.0

    return {
        "requests": len(ordered),
        "seconds": elapsed,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": dict(stats.errors),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": sum(ordered) / len(ordered) * 1000 if ordered else 0.0,
        "max_ms": ordered[-1] * 1000 if ordered else 0.0,
    }


def main() -> int:
    spec = json.load(sys.stdin)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
