"""Run the whole test suite once per PostgreSQL major it must pass on.

    python -m tests.runners.majors [pytest arguments]

On the embedded server (PostgreSQL 18, what the app runs with no DATABASE_URL) and, for
each installation in TEST_POSTGRES_BIN_DIRS (colon-separated; default the two majors
Supabase runs: Debian's postgresql-15 in /usr/lib/postgresql/15/bin, the oldest, and
PostgreSQL 17 in .cache/postgresql-17/bin, what new projects get, fetched by
./scripts/postgres-17), on a new cluster of its own: initdb in a temporary folder,
started on a Unix socket by the same `EmbeddedPostgres` the app uses, TEST_DATABASE_URL
pointed at it. Those runs take only the tests that use the database under test
(TEST_ONLY_DATABASE_TESTS, see conftest.py): the others (token checks, the splitter, tests
with servers of their own) and those marked `same_on_every_major` (the wheel, the fuzzing)
do not depend on it and run in the embedded run only; but the browser tests (marked
`browser`: Chromium against servers of their own, the longest and major-independent) run
in the first other run, so the three finish about together.

The runs go at the same time (the suite mostly waits: on timeouts, servers, the model's
pauses), the embedded one printing as it goes, each other one printed whole when it ends;
TEST_MAJORS_SEQUENTIAL=1 runs them one after the other. Each run has a temporary folder
of its own (`--basetemp`): pytest's shared default, /tmp/pytest-of-<user>, is set back
to mode 0700 by every session that starts, which locks the embedded server's unprivileged
user out of a data folder the other run made there. Each cluster is stopped and its
folder removed whatever happens: tests failing, Ctrl-C, SIGTERM or SIGHUP (both
forwarded to every pytest). Exits non-zero if any run failed.

With TEST_DATABASE_URL already set (a CI service container, `supabase start`) the suite
runs once, against that. TEST_POSTGRES_BIN_DIRS= (empty) runs the embedded server only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO

import asyncpg

from avatar_chat.ops.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_POSTGRES_15 = "/usr/lib/postgresql/15/bin"
POSTGRES_17 = str(ROOT / ".cache" / "postgresql-17" / "bin")  # ./scripts/postgres-17
DEFAULT_BIN_DIRS = f"{DEBIAN_POSTGRES_15}:{POSTGRES_17}"
PYTEST = [sys.executable, "-m", "pytest"]


class Run:
    """One pytest process, printing as it goes or into a file printed when it ends."""

    def __init__(self, label: str, args: list[str], env: dict[str, str], log: IO[bytes] | None) -> None:
        self.label = label
        self.log = log
        self.started = time.monotonic()
        print(f"\n==> the test suite on {label}" + (" (printed when it ends)" if log else ""), flush=True)
        self.process = subprocess.Popen([*PYTEST, *args], env=env, stdout=log, stderr=log)

    def wait(self) -> int:
        code = self.process.wait()
        if self.log is not None:
            self.log.seek(0)
            print(f"\n==> the test suite on {self.label}", flush=True)
            sys.stdout.buffer.write(self.log.read())
            sys.stdout.flush()
        print(f"==> {self.label}: exit {code} after {time.monotonic() - self.started:.0f} s", flush=True)
        return code


class Runner:
    def __init__(self, temp_root: Path) -> None:
        self.runs: list[Run] = []
        self.interrupted: int | None = None  # the signal that stopped us
        self.temp_root = temp_root

    def _basetemp(self, args: list[str]) -> list[str]:
        if any(arg.startswith("--basetemp") for arg in args):
            return []
        return [f"--basetemp={self.temp_root / f'run{len(self.runs)}'}"]

    def on_signal(self, signum: int, _: FrameType | None) -> None:
        self.interrupted = signum
        # Ctrl-C reaches every pytest from the terminal already (same process group); the
        # others may have been sent to this process only.
        if signum == signal.SIGINT:
            return
        for run in self.runs:
            if run.process.poll() is None:
                run.process.send_signal(signum)

    def stop_all(self) -> None:
        for run in self.runs:
            if run.process.poll() is None:
                run.process.terminate()
                run.process.wait()

    def start(self, label: str, args: list[str], env: dict[str, str], log: IO[bytes] | None = None) -> Run:
        run = Run(label, [*self._basetemp(args), *args], env, log)
        self.runs.append(run)
        return run


@contextlib.contextmanager
def cluster(bin_dir: Path) -> Iterator[tuple[str, str]]:
    """A new cluster of that installation: (dsn, server version); always removed."""
    data = Path(tempfile.mkdtemp(prefix="avatar-chat-pg-"))
    pg = EmbeddedPostgres(data, stop_on_exit=False, bin_dir=bin_dir)
    try:
        dsn = pg.start()
        yield dsn, asyncio.run(_server_version(dsn))
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
    temp_root = Path(tempfile.mkdtemp(prefix="avatar-chat-tests-"))
    try:
        return _main(args, Runner(temp_root))
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)


def _main(args: list[str], runner: Runner) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, runner.on_signal)

    if os.environ.get("TEST_DATABASE_URL"):
        return runner.start("TEST_DATABASE_URL", args, dict(os.environ)).wait()

    bin_dirs = [Path(d) for d in os.environ.get("TEST_POSTGRES_BIN_DIRS", DEFAULT_BIN_DIRS).split(":") if d]
    missing = [d for d in bin_dirs if not (d / "initdb").is_file()]
    if missing:
        print(
            f"no PostgreSQL installation in {', '.join(map(str, missing))}: install Debian's postgresql-15"
            " (./scripts/system-deps does, as root) and PostgreSQL 17 (./scripts/postgres-17), or set"
            " TEST_POSTGRES_BIN_DIRS (colon-separated bin folders; empty: embedded only)",
            file=sys.stderr,
        )
        return 1
    sequential = os.environ.get("TEST_MAJORS_SEQUENTIAL", "") not in ("", "0")

    codes: list[int] = []
    with contextlib.ExitStack() as stack:  # the clusters, removed on the way out
        stack.callback(runner.stop_all)  # ...after every pytest, also if a cluster fails to start
        # The browser tests (major-independent, the longest) go to the first other run and
        # schemathesis from outside to the last: the embedded one runs every other
        # major-independent test (ROUTED in tests/conftest.py).
        split = {"TEST_BROWSER_TESTS": "elsewhere", "TEST_OUTSIDE_TESTS": "elsewhere"} if bin_dirs else {}
        embedded = runner.start("the embedded PostgreSQL", args, {**os.environ, **split})
        if sequential:
            codes.append(embedded.wait())
        others: list[Run] = []
        for bin_dir in bin_dirs:
            if runner.interrupted is not None:
                break
            dsn, version = stack.enter_context(cluster(bin_dir))
            env = {**os.environ, "TEST_DATABASE_URL": dsn, "TEST_ONLY_DATABASE_TESTS": "1"}
            env["TEST_BROWSER_TESTS"] = "here" if bin_dir == bin_dirs[0] else "elsewhere"
            env["TEST_OUTSIDE_TESTS"] = "here" if bin_dir == bin_dirs[-1] else "elsewhere"
            label = f"PostgreSQL {version} ({bin_dir})"
            if sequential:
                codes.append(runner.start(label, args, env).wait())
            else:
                others.append(runner.start(label, args, env, stack.enter_context(tempfile.TemporaryFile())))
        if not sequential:
            codes.append(embedded.wait())
        codes.extend(run.wait() for run in others)
    if runner.interrupted is not None:
        return 128 + runner.interrupted
    return next((code for code in codes if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
