"""A real pgbouncer in transaction mode in front of the test Postgres: what Supabase's
transaction pooler (Supavisor, port 6543) does to our connections, on this machine.

`scripts/test` installs Debian's pgbouncer when it is missing; tests that need it fail
(never skip) when it cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from tests.support.servers import free_port

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


class PgBouncer:
    """pgbouncer with `pool_mode = transaction` and `pool_size` server connections per
    database: fewer than the API opens, so server connections are shared between clients."""

    def __init__(self, upstream: str, *, pool_size: int = 3) -> None:
        self.upstream = upstream
        self.pool_size = pool_size
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self._proc: asyncio.subprocess.Process | None = None
        parts = urlsplit(upstream)
        self._user = unquote(parts.username or "postgres")
        self._password = unquote(parts.password or "")
        self.dsn = f"postgresql://{self._user}@127.0.0.1:{self.port}{parts.path or '/postgres'}"

    def _config(self) -> str:
        parts = urlsplit(self.upstream)
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]  # a socket folder, or a host
        port = query.get("port", [str(parts.port or 5432)])[0]
        server = f"host={host} port={port} user={self._user}"
        if self._password:
            server += f" password={self._password}"
        return "\n".join(
            [
                "[databases]",
                f"* = {server}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",  # loopback only, in a test
                f"auth_file = {self._dir / 'users.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "max_client_conn = 1000",
                "ignore_startup_parameters = extra_float_digits",
                "server_reset_query =",
                # After a Postgres restart, try the server again within a second (the
                # default 15 s refuses every client for that long, unlike Supavisor).
                "server_login_retry = 1",
                f"logfile = {self._dir / 'pgbouncer.log'}",
                f"pidfile = {self._dir / 'pgbouncer.pid'}",
                "",
            ]
        )

    async def start(self, timeout_s: float = 10) -> None:
        if PGBOUNCER is None:
            raise RuntimeError(
                "pgbouncer is not installed: ./scripts/test installs it (or: apt-get install pgbouncer)"
            )
        (self._dir / "pgbouncer.ini").write_text(self._config())
        (self._dir / "users.txt").write_text(f'"{self._user}" ""\n')
        args = [PGBOUNCER, str(self._dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root; run it as the owner of the embedded
            # server's socket folder (or of the data folder) so it can reach Postgres.
            self._dir.chmod(0o777)
            for child in self._dir.iterdir():
                child.chmod(0o666)
            args[1:1] = ["-u", self._socket_owner()]
        # Its stderr to a file: a pipe nobody reads fills after a few restarts' log lines,
        # and pgbouncer then blocks on it, pooling nothing.
        stderr_path = self._dir / "pgbouncer.stderr"
        with stderr_path.open("wb") as stderr:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.returncode is not None:
                err = stderr_path.read_text(errors="replace")
                raise RuntimeError(f"pgbouncer exited with {self._proc.returncode}: {err}{self.log()}")
            try:
                conn = await asyncpg.connect(self.dsn, statement_cache_size=0, timeout=2)
            except (OSError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise RuntimeError("pgbouncer did not accept connections:\n" + self.log()) from None
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            return

    def _socket_owner(self) -> str:
        query = parse_qs(urlsplit(self.upstream).query)
        folder = query.get("host", [""])[0]
        if folder.startswith("/") and os.path.isdir(folder):
            return pwd.getpwuid(os.stat(folder).st_uid).pw_name
        return "postgres" if _user_exists("postgres") else "nobody"

    def log(self) -> str:
        path = self._dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it may exit just now
                    os.killpg(self._proc.pid, signal.SIGKILL)
                await self._proc.wait()
            except ProcessLookupError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
