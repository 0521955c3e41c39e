"""EmbeddedPostgres running another installation (`bin_dir`), as tests/runners/majors.py does
for PostgreSQL 15 and 17: as root the cluster runs as an unprivileged user, which must be
able to reach and run that installation wherever it lies."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from avatar_chat.ops.embedded import EmbeddedPostgres
from tests.runners.majors import POSTGRES_17

pytestmark = pytest.mark.slow


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
async def test_an_installation_in_a_folder_only_root_may_enter_runs(tmp_path: Path) -> None:
    source = Path(POSTGRES_17).parent
    if not (source / "bin" / "initdb").is_file():
        pytest.fail(f"no PostgreSQL 17 in {source}: run ./scripts/postgres-17")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    installation = private / "postgresql-17"
    await asyncio.to_thread(shutil.copytree, source, installation, symlinks=True)
    for path in (private, installation, installation / "bin", installation / "lib"):
        path.chmod(0o700)

    pg = EmbeddedPostgres(tmp_path / "data", stop_on_exit=False, bin_dir=installation / "bin")
    try:
        dsn = await asyncio.to_thread(pg.start)
        conn = await asyncpg.connect(dsn)
        try:
            assert (await conn.fetchval("show server_version")).startswith("17.")
        finally:
            await conn.close()
    finally:
        if (pg.pgdata / "postmaster.pid").exists():
            await asyncio.to_thread(pg.stop)
