"""One benchmark run's resources: a temp folder, the database, pgbouncer and every server,
all stopped on exit, also on Ctrl-C, SIGTERM or an exception.

Everything here is synchronous on purpose: a scenario drives subprocesses (Postgres, the
API, the baselines, the load generator) and only enters an event loop briefly for setup
that needs asyncpg or concurrent HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, TypeVar

from tests.support.pooler import PgBouncer

from avatar_chat.ops.embedded import EmbeddedPostgres
from avatar_chat.ops.migrate import migrate
from bench.harness.cpu import CpuMeter
from bench.harness.servers import Server, app_server, module_server, uvicorn_server

T = TypeVar("T")


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
        env = {
            "DATABASE_URL": self.dsn,
            "SUPABASE_JWT_SECRET": self.jwt_secret,
            "DATA_DIR": str(self.tmp / "app-data"),
            **(env or {}),
        }
        return self._start(app_server(name, workers, env, self.tmp / f"{name}.log"), "/ready")

    def start_hello(self, *, workers: int) -> Server:
        """The baseline: `bench.apps.hello` under uvicorn with the API's server settings."""
        return self.start_uvicorn("hello", "bench.apps.hello:app", workers, {}, "/hello")

    def start_floor(
        self,
        *,
        workers: int,
        window: int,
        dsn: str | None = None,
        statement_cache_size: int = 100,
        name: str = "floor",
    ) -> Server:
        """The database floor (`bench.apps.floor`) against `dsn` (default: the session's)."""
        env = {
            "FLOOR_DATABASE_URL": dsn or self.dsn,
            "FLOOR_STATEMENT_CACHE_SIZE": str(statement_cache_size),
            "FLOOR_WINDOW": str(window),
        }
        return self.start_uvicorn(name, "bench.apps.floor:app", workers, env, "/ready")

    def start_uvicorn(self, name: str, target: str, workers: int, env: dict[str, str], ready: str) -> Server:
        """`target` under uvicorn with the settings `avatar-chat serve` uses."""
        return self._start(uvicorn_server(name, target, workers, env, self.tmp / f"{name}.log"), ready)

    def start_fake_model(self, *, chunks: int, interval_ms: int, text: str | None = None) -> Server:
        """The benchmarks' fake OpenAI-compatible model (`bench.apps.fake_model`): each
        streamed reply `chunks` chunks, one every `interval_ms`, the words of `text` (cycled;
        default: its own short text). Its base URL for a client is `<server.base_url>/v1`."""
        args = ["--chunks", str(chunks), "--interval-ms", str(interval_ms)]
        if text is not None:
            path = self.tmp / "fake-model-reply.txt"
            path.write_text(text)
            args += ["--text-file", str(path)]
        return self._start(
            module_server("fake-model", "bench.apps.fake_model", args, self.tmp / "fake-model.log"), "/health"
        )

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
            proc = pooler._proc  # tests.support.pooler keeps the process to itself
            if proc is not None:
                roots["pgbouncer"] = proc.pid
        pg = self.postgres_pid()
        if pg is not None:
            roots["postgres"] = pg
        return CpuMeter(roots)

    def server_log_report(self) -> dict[str, list[str]]:
        """Lines from the servers' logs (warnings, errors, tracebacks); keyed by server."""
        report = {server.name: server.log_report() for server in self.servers}
        return {name: lines for name, lines in report.items() if lines}
