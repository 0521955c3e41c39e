"""An open-loop burst of streamed sends: one stream per user, each on a connection of its
own, their sends spread evenly over a few seconds, each SSE answer read to its end; what
each stream got (status, how it ended, the error code, the time to its end) and what the
servers held meanwhile (database connections, memory).

Plain asyncio sockets (on uvloop), one coroutine per stream and no parsing until the
stream is over, so a thousand streams cost the client little; its CPU is reported apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from bench.harness.cpu import CpuMeter, rss_mib

_ENDS = (b"event: done", b"event: error")
_CODE = re.compile(rb'"code":"([^"]*)"')


@dataclass(frozen=True)
class Outcome:
    """One stream: `status` 0 when no HTTP answer came; `end` done, error, cut (the
    stream closed without either), refused (not 2xx), or the transport error."""

    status: int
    end: str
    code: str = ""  # the error event's code, or the refusal's
    seconds: float = 0.0  # from the send to the `done` or `error` event (or the answer)
    deltas: int = 0


@dataclass
class Peaks:
    """The most the server held at once while a burst ran."""

    connections: int = 0  # its Postgres backends (by application_name)
    rss_mib: float = 0.0  # its processes together
    rss_one_mib: float = 0.0  # its largest process
    samples: int = 0


@dataclass
class Burst:
    outcomes: list[Outcome]
    peaks: Peaks
    cpu_before: dict[str, float] = field(default_factory=dict)
    cpu_after: dict[str, float] = field(default_factory=dict)

    def count(self, end: str) -> int:
        return sum(1 for o in self.outcomes if o.end == end)

    def seconds(self, end: str) -> list[float]:
        return [o.seconds for o in self.outcomes if o.end == end]

    def codes(self, end: str) -> Counter[str]:
        """Error codes of the streams that ended `end` (refused: with the status)."""
        if end == "refused":
            return Counter(f"{o.status} {o.code}".strip() for o in self.outcomes if o.end == end)
        return Counter(o.code for o in self.outcomes if o.end == end)

    def others(self) -> Counter[str]:
        """Streams that ended neither done nor error nor refused (cut, timeouts, resets)."""
        return Counter(o.end for o in self.outcomes if o.end not in ("done", "error", "refused"))


def raise_open_files_limit() -> int:
    """The soft limit on open files up to the hard one (a thousand streams need more than
    1024 descriptors here and in the servers, which inherit it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def sse_post(port: int, path: str, headers: dict[str, str], body: dict[str, str]) -> bytes:
    """A POST asking for an SSE answer, with `Connection: close` (the stream ends the
    connection, so reading to EOF reads the whole answer)."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Content-Type: application/json", "Accept: text/event-stream", "Connection: close"]
    lines += [f"Content-Length: {len(payload)}", "", ""]
    return "\r\n".join(lines).encode() + payload


async def _stream(port: int, request: bytes, at: float, timeout_s: float) -> Outcome:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, at - loop.time()))
    start = loop.time()
    ended: float | None = None
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                while chunk := await reader.read(65536):
                    seen = max(0, len(body) - 16)
                    body += chunk
                    if ended is None and any(end in body[seen:] for end in _ENDS):
                        ended = loop.time()
            finally:
                writer.close()
    except TimeoutError:
        return Outcome(_status(body), "timeout", seconds=loop.time() - start)
    except OSError as exc:
        return Outcome(_status(body), type(exc).__name__, seconds=loop.time() - start)
    return _outcome(bytes(body), (ended or loop.time()) - start)


def _status(answer: bytes | bytearray) -> int:
    parts = answer[:16].split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _outcome(answer: bytes, seconds: float) -> Outcome:
    status = _status(answer)
    deltas = answer.count(b"event: delta")
    if not 200 <= status < 300:
        code = _CODE.search(answer)
        return Outcome(status, "refused", code.group(1).decode() if code else "", seconds)
    if b"event: done" in answer:
        return Outcome(status, "done", "", seconds, deltas)
    at = answer.find(b"event: error")
    if at >= 0:
        code = _CODE.search(answer, at)
        return Outcome(status, "error", code.group(1).decode() if code else "?", seconds, deltas)
    return Outcome(status, "cut", "", seconds, deltas)


async def _watch(dsn: str, application_name: str, pid: int, peaks: Peaks, stop: asyncio.Event) -> None:
    """Every 0.25 s: the server's Postgres backends and its processes' memory."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    sql = "select count(*) from pg_stat_activity where application_name = $1"
    try:
        while not stop.is_set():
            peaks.connections = max(peaks.connections, int(await conn.fetchval(sql, application_name)))
            sizes = rss_mib(pid)
            if sizes:
                peaks.rss_mib = max(peaks.rss_mib, sum(sizes))
                peaks.rss_one_mib = max(peaks.rss_one_mib, max(sizes))
            peaks.samples += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    finally:
        await conn.close()


async def run_burst(
    port: int,
    requests: Sequence[bytes],
    *,
    spread_s: float,
    timeout_s: float,
    watch: tuple[str, str, int],
    meter: CpuMeter,
) -> Burst:
    """Send `requests` (one stream each) spread evenly over `spread_s`; `watch` is (the
    database, the server's application_name, the server's pid) to sample meanwhile; CPU
    from `meter` from just before the first send to the end of the last stream."""
    peaks = Peaks()
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(*watch, peaks, stop))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    step = spread_s / len(requests)
    before = meter.snapshot()
    try:
        outcomes = await asyncio.gather(
            *(_stream(port, request, start + i * step, timeout_s) for i, request in enumerate(requests))
        )
        after = meter.snapshot()
    finally:
        stop.set()
        await watcher
    return Burst(list(outcomes), peaks, before, after)
