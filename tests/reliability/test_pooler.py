"""Through a transaction-mode pooler (pgbouncer, as Supabase's Supavisor on port 6543):
nothing of one request survives on a shared server connection, and migrating through it
is refused with a clear error."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.factories import (
    User,
    create_avatar,
    create_conversation,
    create_user,
    send,
)
from tests.support.pooler import PgBouncer
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "avatar-chat")


@pytest.fixture(scope="module")
async def one_server_connection(database_url: str) -> AsyncIterator[PgBouncer]:
    """Every transaction of every worker runs on the same single server connection."""
    pooler = PgBouncer(database_url, pool_size=1)
    await pooler.start()
    yield pooler
    await pooler.stop()


async def _session_state(pooler: PgBouncer) -> dict[str, object]:
    conn = await asyncpg.connect(pooler.dsn, statement_cache_size=0)
    try:
        row = await conn.fetchrow(
            "select current_user as user, session_user as session_user,"
            " current_setting('role') as role,"
            " coalesce(current_setting('request.jwt.claims', true), '') as claims,"
            " current_setting('search_path') as search_path,"
            " current_setting('statement_timeout') as statement_timeout,"
            " (select count(*) from pg_prepared_statements) as prepared,"
            " (select count(*) from pg_locks where locktype = 'advisory'"
            "  and pid = pg_backend_pid()) as locks,"
            " pg_backend_pid() as pid"
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row.items())


async def test_nothing_leaks_from_one_request_to_the_next(
    one_server_connection: PgBouncer, database_url: str, owner: asyncpg.Connection
) -> None:
    before = await _session_state(one_server_connection)
    assert before["claims"] == "" and before["role"] == "none"
    async with ServerProcess(
        database_url=database_url,
        workers=3,
        env={"DATABASE_URL": one_server_connection.dsn, "DB_POOL_MODE": "transaction"},
    ) as server:
        alice, bob = await create_user(owner), await create_user(owner)
        async with server.client() as client:

            async def chat(user: User) -> None:
                await create_avatar(client, user)
                conversation = await create_conversation(client, user)
                for i in range(8):
                    assert (
                        await send(client, user, conversation["id"], f"m{i}", key=f"k{i}")
                    ).status_code == 201
                    patched = await client.patch(
                        "/avatars/me/persona", json={"personality": "witty"}, headers=user.headers
                    )
                    assert patched.status_code == 200
                    mine = await client.get("/conversations", headers=user.headers)
                    assert [c["user_id"] for c in mine.json()["items"]] == [str(user.id)]

            await asyncio.gather(chat(alice), chat(bob))
    after = await _session_state(one_server_connection)
    # The same server connection served every request of both users.
    assert after["pid"] == before["pid"]
    assert {k: after[k] for k in after if k != "pid"} == {k: before[k] for k in before if k != "pid"}
    assert after["prepared"] == 0 and after["locks"] == 0


async def _migrate(env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "migrate",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_migrate_refuses_a_transaction_pooler(
    one_server_connection: PgBouncer, database_url: str
) -> None:
    # Said so in the settings: refused before connecting.
    code, output = await _migrate({"DATABASE_URL": one_server_connection.dsn, "DB_POOL_MODE": "transaction"})
    assert code != 0
    assert "MIGRATION_DATABASE_URL" in output and "transaction pooler" in output
    # Not said (a port that looks like Postgres'): recognised by how it behaves.
    code, output = await _migrate({"DATABASE_URL": one_server_connection.dsn, "DB_POOL_MODE": "auto"})
    assert code != 0
    assert "MIGRATION_DATABASE_URL" in output and "Traceback" not in output
    # MIGRATION_DATABASE_URL pointing at the database itself: migrates (nothing to do).
    code, output = await _migrate(
        {"DATABASE_URL": one_server_connection.dsn, "MIGRATION_DATABASE_URL": database_url}
    )
    assert code == 0, output
    assert "applied: nothing (up to date)" in output
