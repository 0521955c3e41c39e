"""tests/runners/majors.py: one run per PostgreSQL major, every temporary cluster removed.

Each test runs the helper on a small test file of its own (not this suite), whose tests
behave differently on the embedded run and on the temporary cluster's (TEST_DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.runners.majors import DEBIAN_POSTGRES_15

ROOT = Path(__file__).resolve().parents[2]
MAJORS = [sys.executable, "-m", "tests.runners.majors"]

pytestmark = pytest.mark.slow

PROBE = """
import os, pathlib, time

def test_probe(tmp_path_factory):
    url = os.environ.get("TEST_DATABASE_URL")
    run = "embedded" if url is None else "cluster"
    pathlib.Path(os.environ["PROBE_OUT"] + f".basetemp.{run}").write_text(str(tmp_path_factory.getbasetemp()))
    if url is None:
        return
    pathlib.Path(os.environ["PROBE_OUT"]).write_text(url)
    if os.environ.get("PROBE_HANG"):
        time.sleep(120)
    assert False, "fails on the cluster"
"""


def start_helper(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "test_probe.py").write_text(PROBE)
    (tmp_path / "tmp").mkdir()
    environment = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    environment.update(
        TMPDIR=str(tmp_path / "tmp"),
        PROBE_OUT=str(tmp_path / "url"),
        TEST_POSTGRES_BIN_DIRS=DEBIAN_POSTGRES_15,  # one cluster is enough here
        **env,
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.runners.majors",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "probe"),
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def assert_cluster_gone(tmp_path: Path) -> None:
    assert list((tmp_path / "tmp").glob("avatar-chat-pg-*")) == [], "the cluster's folder is left behind"
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect((tmp_path / "url").read_text(), timeout=5)


async def test_a_failure_on_the_cluster_fails_the_run_and_the_cluster_is_removed(tmp_path: Path) -> None:
    helper = start_helper(tmp_path)
    output, _ = await asyncio.to_thread(helper.communicate, timeout=120)
    assert helper.returncode == 1, output
    assert "==> the test suite on the embedded PostgreSQL" in output
    assert "==> the test suite on PostgreSQL 15." in output
    assert "fails on the cluster" in output
    await assert_cluster_gone(tmp_path)


async def test_each_run_has_a_temporary_folder_of_its_own_removed_at_the_end(tmp_path: Path) -> None:
    """Not pytest's shared /tmp/pytest-of-<user>: each session that starts sets that back
    to mode 0700, locking the embedded server's user out of the other run's data folder
    (seen in CI as 30 failures and a PANIC on pg_control)."""
    helper = start_helper(tmp_path)
    output, _ = await asyncio.to_thread(helper.communicate, timeout=120)
    assert helper.returncode == 1, output
    embedded = Path((tmp_path / "url.basetemp.embedded").read_text())
    cluster = Path((tmp_path / "url.basetemp.cluster").read_text())
    assert embedded != cluster
    for basetemp in (embedded, cluster):
        assert basetemp.parent.parent == tmp_path / "tmp", basetemp  # in TMPDIR, not pytest's
        assert basetemp.parent.name.startswith("avatar-chat-tests-"), basetemp
    assert list((tmp_path / "tmp").glob("avatar-chat-tests-*")) == [], "a temporary folder is left behind"


async def test_sigterm_stops_pytest_and_removes_the_cluster(tmp_path: Path) -> None:
    helper = start_helper(tmp_path, PROBE_HANG="1")
    deadline = time.monotonic() + 90
    while not (tmp_path / "url").exists():
        assert helper.poll() is None, helper.communicate()[0]
        assert time.monotonic() < deadline, "the probe never ran on the cluster"
        await asyncio.sleep(0.2)
    conn = await asyncpg.connect((tmp_path / "url").read_text())  # it is up
    await conn.close()
    helper.send_signal(signal.SIGTERM)
    output, _ = await asyncio.to_thread(helper.communicate, timeout=60)
    assert helper.returncode == 128 + signal.SIGTERM, output
    await assert_cluster_gone(tmp_path)
