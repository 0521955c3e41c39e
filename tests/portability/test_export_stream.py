"""GET /me/export from a real `avatar-chat serve` (issue #21): the first bytes come at once,
a client that goes away ends the export and frees its transaction, the archive is one
snapshot, and all of it holds behind a transaction pooler.

Accounts are made in SQL as the table owner (`avatar_chat.importing` set for the
transaction, so the limits trigger counts no model call), conversation by conversation:
each message gets its seq from messages_assign_seq. Their text is hex (md5), which
compresses about 2:1 only: with BIG_CHARS the archive is larger than the socket buffers
between the server and a client that stops reading (SLOW_READER), so the server waits for
that client mid-export, its transaction open."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.factories import User
from tests.support.pooler import PgBouncer
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.slow

# No daily limit: a test may export an account more than EXPORTS_PER_DAY (5) times.
ENV = {"EXPORTS_PER_DAY": "0"}
CONVERSATIONS = 20
MESSAGES = 500  # per conversation: 10,000 in all
CHARS = 320  # per message, ten md5s (an archive of ~2.3 MB)
# A client that stops reading: its socket's receive buffer is small (no autotuning), so
# the server can only get ahead of it by its own send buffer (net.ipv4.tcp_wmem, at most
# 4 MB by default); an archive larger than that keeps the server waiting for the client.
SLOW_READER = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)]
BIG_CHARS = 1600  # an archive of ~9 MB


@pytest.fixture(scope="module")
async def server(database_url: str) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(database_url=database_url, env=ENV) as proc:
        yield proc


def slow_reader(server: ServerProcess) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(socket_options=SLOW_READER)
    return httpx.AsyncClient(base_url=server.base_url, timeout=30, transport=transport)


async def make_account(
    owner: asyncpg.Connection,
    user: User,
    *,
    conversations: int = CONVERSATIONS,
    messages: int = MESSAGES,
    chars: int = CHARS,
) -> list[uuid.UUID]:
    """`conversations` conversations of `messages` messages each, user and assistant
    alternating, ~`chars` characters each; their ids in creation order."""
    ids: list[uuid.UUID] = []
    for i in range(conversations):
        async with owner.transaction():
            await owner.execute("select set_config('avatar_chat.importing', 'on', true)")
            conversation: uuid.UUID = await owner.fetchval(
                "insert into public.conversations (user_id, title, mode)"
                " values ($1, $2, 'assistant') returning id",
                user.id,
                f"export {i}",
            )
            await add_messages(owner, user, conversation, messages, chars)
        ids.append(conversation)
    return ids


async def add_messages(
    owner: asyncpg.Connection, user: User, conversation: uuid.UUID, count: int, chars: int = CHARS
) -> None:
    """`count` messages at the end of `conversation` (in the caller's transaction, which
    has set avatar_chat.importing)."""
    await owner.execute(
        "insert into public.messages (conversation_id, user_id, role, content)"
        " select $1, $2, case when n % 2 = 1 then 'user' else 'assistant' end::public.message_role,"
        "   (select string_agg(md5(n::text || ':' || k::text || random()::text), '')"
        "      from generate_series(1, $4::int / 32) k)"
        " from generate_series(1, $3::int) n",
        conversation,
        user.id,
        count,
        chars,
    )


async def export_lease(owner: asyncpg.Connection, user: User) -> bool | None:
    """Whether the user's export lease is live (None: no export was ever taken)."""
    live: bool | None = await owner.fetchval(
        "select e.expires_at > now() from avatar_chat.exports e where e.user_id = $1", user.id
    )
    return live


async def idle_in_transaction(owner: asyncpg.Connection) -> list[int]:
    """The app's backends whose transaction waits for the app (its client)."""
    rows = await owner.fetch(
        "select pid from pg_stat_activity where application_name = 'avatar-chat'"
        " and state in ('idle in transaction', 'idle in transaction (aborted)')"
    )
    return [r["pid"] for r in rows]


def check_archive(data: bytes) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    """A valid zip whose export.json counts what its files hold; the zip and export.json."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    manifest = json.loads(archive.read("export.json"))
    conversations = [n for n in archive.namelist() if n.startswith("conversations/")]
    messages = sum(len(json.loads(archive.read(n))["messages"]) for n in conversations)
    usage = len(json.loads(archive.read("usage.json"))["records"])
    versions = (
        len(json.loads(archive.read("avatar.json"))["history"]) if "avatar.json" in archive.namelist() else 0
    )
    assert manifest["counts"] == {
        "conversations": len(conversations),
        "messages": messages,
        "usage_records": usage,
        "avatar_versions": versions,
    }
    return archive, manifest


async def read_export(client: httpx.AsyncClient, user: User) -> bytes:
    async with client.stream("GET", "/me/export", headers=user.headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def test_the_first_bytes_come_within_a_second(
    server: ServerProcess, owner: asyncpg.Connection, user: User
) -> None:
    await make_account(owner, user)
    async with server.client() as client:
        started = time.perf_counter()
        async with client.stream("GET", "/me/export", headers=user.headers) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            first = await anext(chunks)
            first_byte_s = time.perf_counter() - started
            rest = b"".join([chunk async for chunk in chunks])
    assert first.startswith(b"PK\x03\x04")  # a zip's first entry (README.md)
    assert first_byte_s < 1.0
    _, manifest = check_archive(first + rest)
    assert manifest["counts"]["messages"] == CONVERSATIONS * MESSAGES


async def test_a_client_that_goes_away_ends_the_export(
    server: ServerProcess, owner: asyncpg.Connection, user: User
) -> None:
    """It reads the first chunk and waits: the server waits for it mid-export (its
    transaction open, idle); then it closes the connection: the transaction ends, the lease
    ends, and the user may export again at once."""
    await make_account(owner, user, chars=BIG_CHARS)
    before = set(await idle_in_transaction(owner))
    async with (
        slow_reader(server) as client,
        client.stream("GET", "/me/export", headers=user.headers) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_raw()  # kept: dropping it would close the response
        await anext(chunks)
        # The server fills the socket buffers, then waits for this client.
        waiting: list[int] = []
        deadline = time.monotonic() + 10
        while not waiting and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            waiting = [pid for pid in await idle_in_transaction(owner) if pid not in before]
        assert waiting, "the export's transaction was not waiting for its client"
        assert await export_lease(owner, user) is True
        # Leaving the block closes the connection before the body was read.
    closed = time.monotonic()
    while time.monotonic() < closed + 5:
        left = [pid for pid in await idle_in_transaction(owner) if pid in waiting]
        if not left and await export_lease(owner, user) is False:
            break
        await asyncio.sleep(0.05)
    assert [pid for pid in await idle_in_transaction(owner) if pid in waiting] == []
    assert await export_lease(owner, user) is False

    async with server.client() as client:
        again = await read_export(client, user)  # admitted: no 429 export_in_progress
    _, manifest = check_archive(again)
    assert manifest["counts"]["messages"] == CONVERSATIONS * MESSAGES


async def test_an_export_is_one_snapshot(
    server: ServerProcess, owner: asyncpg.Connection, user: User
) -> None:
    """Rows committed while a slow client reads its export are not in it, and export.json
    counts what the files hold."""
    conversations = await make_account(owner, user, chars=BIG_CHARS)
    async with (
        slow_reader(server) as client,
        client.stream("GET", "/me/export", headers=user.headers) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_raw()
        data = [await anext(chunks)]  # the snapshot is taken before the first byte
        async with owner.transaction():
            await owner.execute("select set_config('avatar_chat.importing', 'on', true)")
            await add_messages(owner, user, conversations[0], 10)  # a conversation read first
            await add_messages(owner, user, conversations[-1], 10)  # and one read last
            added: uuid.UUID = await owner.fetchval(
                "insert into public.conversations (user_id, title) values ($1, 'added') returning id",
                user.id,
            )
            await add_messages(owner, user, added, 4)
        # Committed while the export still runs (its lease ends when it does).
        assert await export_lease(owner, user) is True
        async for chunk in chunks:
            data.append(chunk)
            await asyncio.sleep(0.005)
    archive, manifest = check_archive(b"".join(data))
    assert manifest["counts"]["conversations"] == CONVERSATIONS
    assert manifest["counts"]["messages"] == CONVERSATIONS * MESSAGES
    assert f"conversations/{added}.json" not in archive.namelist()
    for conversation in (conversations[0], conversations[-1]):
        messages = json.loads(archive.read(f"conversations/{conversation}.json"))["messages"]
        assert [m["seq"] for m in messages] == list(range(1, MESSAGES + 1))
    # The next export has them.
    async with server.client() as client:
        _, after = check_archive(await read_export(client, user))
    assert after["counts"]["conversations"] == CONVERSATIONS + 1
    assert after["counts"]["messages"] == CONVERSATIONS * MESSAGES + 24


async def test_an_export_through_a_transaction_pooler(
    database_url: str, pgbouncer: PgBouncer, owner: asyncpg.Connection, user: User
) -> None:
    """One read-only repeatable-read transaction on one server connection of pgbouncer in
    transaction mode (as Supavisor on 6543): the whole archive, valid."""
    await make_account(owner, user, conversations=5)
    env = {**ENV, "DATABASE_URL": pgbouncer.dsn, "DB_POOL_MODE": "transaction"}
    async with ServerProcess(database_url=database_url, env=env) as pooled, pooled.client() as client:
        archive, manifest = check_archive(await read_export(client, user))
        assert manifest["counts"]["conversations"] == 5
        assert manifest["counts"]["messages"] == 5 * MESSAGES
        assert len(archive.namelist()) == 5 + 3 + 4  # README, export, usage, schemas/ x4
        assert await export_lease(owner, user) is False
