"""Real `avatar-chat serve` processes for tests where workers and processes matter."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType

import httpx

from avatar_chat.ops.runtime import EMBEDDED_HANDOFF_ENV
from tests.support.factories import TEST_JWT_SECRET

CLI = str(Path(sys.executable).parent / "avatar-chat")


# What only the test may say about the database a server uses.
_DATABASE_ENV = frozenset({"DATABASE_URL", "SUPABASE_JWT_SECRET", EMBEDDED_HANDOFF_ENV})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(proc: asyncio.subprocess.Process, base_url: str, timeout_s: float = 30) -> None:
    """Until the server at `base_url` answers GET /ready with 200; failing if `proc` exits
    first or `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if (await client.get("/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("server did not become ready")


class ServerProcess:
    """`avatar-chat serve --workers N` against the test database; or, with no
    `database_url`, on the embedded default as `./scripts/run` starts it (its own Postgres
    and generated JWT secret in `env["DATA_DIR"]`, migrated at start).

    `async with ServerProcess(...) as server:` starts it and stops it at the end, whatever
    happened (also when it never became ready)."""

    def __init__(
        self,
        *,
        database_url: str | None,
        jwt_secret: str | None = TEST_JWT_SECRET,
        workers: int = 1,
        env: dict[str, str] | None = None,
    ):
        self.port = free_port()
        self.workers = workers
        self.base_url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if k not in _DATABASE_ENV}
        if database_url is None:
            assert env is not None and "DATA_DIR" in env, "the embedded default needs a DATA_DIR of its own"
            database = {}
        else:
            assert jwt_secret is not None
            database = {
                "DATABASE_URL": database_url,
                "SUPABASE_JWT_SECRET": jwt_secret,
                "MIGRATE_ON_START": "false",
            }
        self._env = {
            **inherited,
            **database,
            "LOG_LEVEL": "WARNING",
            "OFFLINE_LLM_CHUNK_DELAY_MS": "0",
            "RATE_LIMIT_SENDS_PER_MINUTE": "0",
            "MAX_CONCURRENT_STREAMS": "0",
            "RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE": "0",
            "SAFETY_DISCLOSURE_NOTICE": "",  # tests of notices (tests/safety) turn it on
            **(env or {}),
        }
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def data_dir(self) -> Path:
        """The DATA_DIR it runs with (on the embedded default: where its cluster lives)."""
        return Path(self._env["DATA_DIR"])

    def client(self) -> httpx.AsyncClient:
        """No keep-alive: every request is a new connection, so requests spread over the workers."""
        return httpx.AsyncClient(
            base_url=self.base_url,
            timeout=30,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=0),
        )

    async def start(self, timeout_s: float = 30) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            env=self._env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=None,  # worker logs show up in pytest's captured output on failure
            start_new_session=True,
        )
        await self.wait_ready(timeout_s)

    async def wait_ready(self, timeout_s: float = 30) -> None:
        assert self.proc is not None
        await wait_ready(self.proc, self.base_url, timeout_s)

    async def __aenter__(self) -> ServerProcess:
        try:
            await self.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            await self.stop()

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (children of the supervisor)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in children if "spawn_main" in _cmdline(int(pid))]

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@asynccontextmanager
async def server_pair(
    database_url: str, env: dict[str, str]
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one database, started together and stopped whatever happened: A (the
    one a test sends to) and B, "another worker" (another machine, even)."""
    a = ServerProcess(database_url=database_url, env=env)
    b = ServerProcess(database_url=database_url, env=env)
    try:
        await asyncio.gather(a.start(), b.start())
        yield a, b
    finally:
        await asyncio.gather(a.__aexit__(None, None, None), b.__aexit__(None, None, None))
