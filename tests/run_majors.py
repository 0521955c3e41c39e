"""Run the whole test suite once per PostgreSQL major it must pass on.

    python -m tests.run_majors [pytest arguments]

First on the embedded server (PostgreSQL 18, what the app runs with no DATABASE_URL),
then, for each installation in TEST_POSTGRES_BIN_DIRS (colon-separated; default Debian's
postgresql-15, /usr/lib/postgresql/15/bin, the oldest major Supabase runs), on a new
cluster of its own: initdb in a temporary folder, started on a Unix socket by the same
`EmbeddedPostgres` the app uses, TEST_DATABASE_URL pointed at it. Those runs take only
the tests that use the database under test (TEST_ONLY_DATABASE_TESTS, see conftest.py):
the others (token checks, the splitter, the wheel, tests with servers of their own) do
not depend on it and ran in the first run. Each cluster is stopped and its folder removed
whatever happens: tests failing, Ctrl-C, SIGTERM or SIGHUP (both forwarded to the running
pytest; no further run starts). Exits non-zero if any run failed.

With TEST_DATABASE_URL already set (a CI service container, `supabase start`) the suite
runs once, against that. TEST_POSTGRES_BIN_DIRS= (empty) runs the embedded server only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import asyncpg

from avatar_chat.core.embedded import EmbeddedPostgres

DEFAULT_BIN_DIRS = "/usr/lib/postgresql/15/bin"
PYTEST = [sys.executable, "-m", "pytest"]


class Runner:
    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.interrupted: int | None = None  # the signal that stopped us

    def on_signal(self, signum: int, _: FrameType | None) -> None:
        self.interrupted = signum
        # Ctrl-C reaches pytest from the terminal already (same process group); the
        # others may have been sent to this process only.
        if signum != signal.SIGINT and self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def pytest(self, label: str, args: list[str], env: dict[str, str]) -> int:
        print(f"\n==> the test suite on {label}", flush=True)
        started = time.monotonic()
        self.child = subprocess.Popen([*PYTEST, *args], env=env)
        try:
            code = self.child.wait()
        finally:
            self.child = None
        print(f"==> {label}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        return code

    def on_cluster(self, bin_dir: Path, args: list[str]) -> int:
        data = Path(tempfile.mkdtemp(prefix="avatar-chat-pg-"))
        pg = EmbeddedPostgres(data, stop_on_exit=False, bin_dir=bin_dir)
        try:
            dsn = pg.start()
            version = asyncio.run(_server_version(dsn))
            if self.interrupted is not None:
                return 128 + self.interrupted
            env = {**os.environ, "TEST_DATABASE_URL": dsn, "TEST_ONLY_DATABASE_TESTS": "1"}
            return self.pytest(f"PostgreSQL {version} ({bin_dir})", args, env)
        finally:
            try:
                if (pg.pgdata / "postmaster.pid").exists():
                    pg.stop()
            finally:
                shutil.rmtree(data, ignore_errors=True)


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        version: str = await conn.fetchval("show server_version")
        return version
    finally:
        await conn.close()


def main(args: list[str]) -> int:
    runner = Runner()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, runner.on_signal)

    if os.environ.get("TEST_DATABASE_URL"):
        return runner.pytest("TEST_DATABASE_URL", args, dict(os.environ))

    bin_dirs = [Path(d) for d in os.environ.get("TEST_POSTGRES_BIN_DIRS", DEFAULT_BIN_DIRS).split(":") if d]
    missing = [d for d in bin_dirs if not (d / "initdb").is_file()]
    if missing:
        print(
            f"no PostgreSQL installation in {', '.join(map(str, missing))}: install Debian's postgresql-15"
            " (./scripts/system-deps does, as root), or set TEST_POSTGRES_BIN_DIRS (empty: embedded only)",
            file=sys.stderr,
        )
        return 1

    codes = [runner.pytest("the embedded PostgreSQL", args, dict(os.environ))]
    for bin_dir in bin_dirs:
        if runner.interrupted is not None:
            break
        codes.append(runner.on_cluster(bin_dir, args))
    if runner.interrupted is not None:
        return 128 + runner.interrupted
    return next((code for code in codes if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
