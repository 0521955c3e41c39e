"""The built wheel, as someone who `pip install`s it meets it: outside the checkout.

A wheel built from this checkout must ship the migrations (package data, byte-identical
to `supabase/migrations`) and only the `avatar_chat` import package; installed in a fresh
venv and run from an empty folder, `avatar-chat migrate` builds an empty database and
`avatar-chat serve` answers `/ready` (checking the schema) and a real request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePath

import asyncpg
import httpx
import pytest

from tests.support.assertions import assert_error
from tests.support.databases import fresh_database
from tests.support.factories import TEST_JWT_SECRET, create_avatar, create_user
from tests.support.servers import free_port

# Packaging: the wheel builds and installs the same whatever the server's major.
pytestmark = [pytest.mark.slow, pytest.mark.same_on_every_major]

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "supabase" / "migrations"
SUPABASE_LOCAL = ROOT / "backend" / "avatar_chat" / "ops" / "sql" / "supabase_local.sql"
WHEEL_MIGRATIONS = "avatar_chat/ops/sql/migrations/"
WHEEL_SUPABASE_LOCAL = "avatar_chat/ops/sql/supabase_local.sql"
WEB_STATIC = ROOT / "backend" / "avatar_chat" / "web" / "static"
WHEEL_WEB_STATIC = "avatar_chat/web/static/"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # empty; every command of the installed package runs here

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def cli(self) -> str:
        return str(self.venv / "bin" / "avatar-chat")

    def env(self, **extra: str) -> dict[str, str]:
        return _clean_env(
            VIRTUAL_ENV=str(self.venv),
            PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            **extra,
        )


def _migration_files() -> dict[str, bytes]:
    """`supabase/migrations`, the source of truth: file name -> contents."""
    found = {path.name: path.read_bytes() for path in MIGRATIONS.glob("*.sql")}
    assert found, f"no migrations in {MIGRATIONS}"
    return found


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH and friends: nothing may put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    return {**env, **extra}


async def _check(*cmd: str, cwd: Path, env: dict[str, str], timeout_s: float) -> str:
    """Run `cmd`, which must exit 0; its stdout. Its stderr is only ever shown on failure."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{err.decode(errors='replace')}"
    return out.decode()


async def _build_wheel(tmp: Path) -> Path:
    """`pip wheel` of the checkout, with setuptools' build/ and egg-info kept in `tmp`.

    In-tree, setuptools would write build/ into the checkout and reuse it next time, and a
    stale build/lib ends up in the wheel: a fresh build folder per run tests what
    pyproject.toml says, and leaves the checkout as it was.
    """
    (tmp / "egg").mkdir()
    extra_config = tmp / "setuptools.cfg"
    extra_config.write_text(f"[build]\nbuild_base = {tmp / 'build'}\n[egg_info]\negg_base = {tmp / 'egg'}\n")
    dist = tmp / "dist"
    env = _clean_env(DIST_EXTRA_CONFIG=str(extra_config))
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet")
    await _check(*pip, "wheel", "--no-deps", "-w", str(dist), str(ROOT), cwd=tmp, env=env, timeout_s=300)
    assert (tmp / "build").is_dir(), "setuptools ignored DIST_EXTRA_CONFIG and built inside the checkout"
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
async def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, and a fresh venv (same interpreter, nothing shared) with it installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    workdir = tmp / "cwd"
    workdir.mkdir()
    venv = tmp.resolve() / "venv"
    # Independent, so at once: creating the venv (ensurepip) takes as long as the build.
    make_venv = asyncio.create_task(
        _check(sys.executable, "-m", "venv", str(venv), cwd=tmp, env=_clean_env(), timeout_s=120)
    )
    try:
        wheel = await _build_wheel(tmp)
    finally:
        await make_venv
    result = Installed(wheel=wheel, venv=venv, workdir=workdir)
    pip = (result.python, "-m", "pip", "--disable-pip-version-check", "--quiet")
    await _check(*pip, "install", str(wheel), cwd=workdir, env=result.env(), timeout_s=600)
    return result


def test_the_wheel_ships_the_migrations_and_only_avatar_chat(installed: Installed) -> None:
    expected = _migration_files()
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = [info.filename for info in wheel.infolist() if not info.is_dir()]
        shipped = {
            name.removeprefix(WHEEL_MIGRATIONS): wheel.read(name)
            for name in names
            if name.startswith(WHEEL_MIGRATIONS)
        }
        assert WHEEL_SUPABASE_LOCAL in names, "the wheel lacks supabase_local.sql"
        assert wheel.read(WHEEL_SUPABASE_LOCAL) == SUPABASE_LOCAL.read_bytes()
    assert sorted(shipped) == sorted(expected), "the wheel's migrations are not supabase/migrations"
    for name, sql in expected.items():
        assert shipped[name] == sql, f"{name} in the wheel differs from supabase/migrations/{name}"
    top_level = {name.split("/", 1)[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"avatar_chat"}, top_level


def test_the_wheel_ships_the_web_client(installed: Installed) -> None:
    expected = {
        p.relative_to(WEB_STATIC).as_posix(): p.read_bytes() for p in WEB_STATIC.rglob("*") if p.is_file()
    }
    assert "index.html" in expected and any(name.startswith("vendor/") for name in expected)
    with zipfile.ZipFile(installed.wheel) as wheel:
        shipped = {
            info.filename.removeprefix(WHEEL_WEB_STATIC): wheel.read(info.filename)
            for info in wheel.infolist()
            if info.filename.startswith(WHEEL_WEB_STATIC) and not info.is_dir()
        }
    assert shipped == expected, sorted(set(shipped) ^ set(expected))


# Run by the fresh venv's python: where it finds the package and the migrations.
_WHERE = """
import json, sysconfig
from pathlib import Path
import avatar_chat
from avatar_chat.ops.migrate import default_migrations_dir
migrations = default_migrations_dir()
print(json.dumps({
    "package": str(Path(avatar_chat.__file__).resolve()),
    "site_packages": str(Path(sysconfig.get_path("purelib")).resolve()),
    "migrations": str(migrations.resolve()),
    "migrations_is_symlink": migrations.is_symlink(),
    "migration_files": sorted(path.name for path in migrations.iterdir()),
}))
"""


async def test_the_venv_imports_the_installed_wheel_not_the_checkout(installed: Installed) -> None:
    out = await _check(
        installed.python, "-c", _WHERE, cwd=installed.workdir, env=installed.env(), timeout_s=60
    )
    where = json.loads(out)
    site_packages = PurePath(where["site_packages"])
    assert site_packages.is_relative_to(installed.venv), where
    assert PurePath(where["package"]).is_relative_to(site_packages), where
    assert PurePath(where["migrations"]).is_relative_to(site_packages), where
    assert not where["migrations_is_symlink"], where
    assert where["migration_files"] == sorted(_migration_files()), where


async def test_the_installed_cli_migrates_an_empty_database_and_serves_it(
    installed: Installed, database_url: str
) -> None:
    versions = sorted(name.split("_", 1)[0] for name in _migration_files())
    async with fresh_database(database_url) as dsn:
        env = installed.env(
            DATABASE_URL=dsn,
            SUPABASE_JWT_SECRET=TEST_JWT_SECRET,
            MIGRATE_ON_START="false",
            LOG_LEVEL="WARNING",
            RATE_LIMIT_SENDS_PER_MINUTE="0",
            MAX_CONCURRENT_STREAMS="0",
        )
        migrate = (installed.cli, "migrate")
        out = await _check(*migrate, cwd=installed.workdir, env=env, timeout_s=120)
        assert out.strip() == "applied: " + ", ".join(versions)
        conn = await asyncpg.connect(dsn)
        try:
            recorded = "select version from supabase_migrations.schema_migrations order by version"
            assert [row["version"] for row in await conn.fetch(recorded)] == versions
            out = await _check(*migrate, cwd=installed.workdir, env=env, timeout_s=120)
            assert out.strip() == "applied: nothing (up to date)"
            assert [row["version"] for row in await conn.fetch(recorded)] == versions

            async with _serve(installed, env) as client:
                response = await client.get("/ready")
                assert response.status_code == 200 and response.json() == {"status": "ready"}
                # /ready really checks the schema: the newest migration gone -> 503.
                newest = await conn.fetchrow(
                    "delete from supabase_migrations.schema_migrations where version = $1 returning *",
                    versions[-1],
                )
                assert newest is not None
                assert_error(await client.get("/ready"), 503, "schema_outdated")
                await conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name, statements)"
                    " values ($1, $2, $3)",
                    newest["version"],
                    newest["name"],
                    newest["statements"],
                )
                assert (await client.get("/ready")).json() == {"status": "ready"}
                # And a real request, as a user with a token.
                user = await create_user(conn)
                avatar = await create_avatar(client, user)
                assert avatar["name"] == "Ava"
                # The web client, from site-packages.
                index = await client.get("/app/")
                assert index.status_code == 200 and "app.js" in index.text
                assert (await client.get("/app/app.js")).headers["content-type"].startswith("text/javascript")
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _serve(installed: Installed, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """`avatar-chat serve` in its own session, ready; SIGTERM at the end, whose group is gone after."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        installed.cli,
        "serve",
        "--port",
        str(port),
        cwd=installed.workdir,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=None,  # in pytest's captured output, shown on failure
        start_new_session=True,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await _wait_ready(proc, client)
            yield client
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await _wait_group_gone(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()


async def _wait_ready(proc: asyncio.subprocess.Process, client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"avatar-chat serve exited with {proc.returncode} before it was ready")
        try:
            if (await client.get("/ready", timeout=2)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("avatar-chat serve was not ready within 60 s")


async def _wait_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"processes of avatar-chat serve's group {pgid} outlived it")
