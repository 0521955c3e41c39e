"""Worker processes dying (SIGKILL) and stopping (SIGTERM) in the middle of streamed replies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.factories import (
    User,
    create_avatar,
    create_conversation,
    create_user,
    history,
    send,
)
from tests.support.servers import ServerProcess
from tests.support.sse import sse_events

pytestmark = pytest.mark.slow

# ~1.2 s per reply; leases of 2 s, renewed while a reply is generated
SLOW_REPLIES = {"OFFLINE_LLM_CHUNK_DELAY_MS": "120", "CHAT_TURN_DEADLINE_S": "4", "CHAT_REPLY_LEASE_S": "2"}


@dataclass
class Stream:
    conversation_id: str
    key: str
    events: list[tuple[str, Any]] = field(default_factory=list)
    cut: bool = False

    @property
    def acknowledged(self) -> dict[str, Any] | None:
        return next((data for name, data in self.events if name == "user_message"), None)

    @property
    def done(self) -> dict[str, Any] | None:
        return next((data for name, data in self.events if name == "done"), None)


async def open_stream(client: httpx.AsyncClient, user: User, stream: Stream, started: asyncio.Event) -> None:
    headers = {**user.headers, "Accept": "text/event-stream", "Idempotency-Key": stream.key}
    try:
        async with client.stream(
            "POST",
            f"/conversations/{stream.conversation_id}/messages",
            json={"content": stream.key},
            headers=headers,
        ) as response:
            assert response.status_code == 201
            async for event in sse_events(response):
                stream.events.append(event)
                if sum(1 for n, _ in stream.events if n == "delta") >= 2:
                    started.set()
    except (httpx.TransportError, httpx.StreamError):
        stream.cut = True
    if stream.done is None:
        stream.cut = True


# Liveness rows of 2 s, leases of 24 s (renewed once less than half is left, asked every
# quarter lease: at least 6 s left whenever the worker dies): a reply taken over within
# TAKEOVER_BOUND_S of its worker's death was taken over because the worker's row expired,
# not because its lease did. The bound leaves 3 s over the TTL for the test's own requests
# on a loaded machine (three suites on 2 cores) and stays under the 6 s.
CRASH_TTL_S = 2.0
CRASH_LEASE_S = 24.0
TAKEOVER_BOUND_S = CRASH_TTL_S + 3.0
assert TAKEOVER_BOUND_S < CRASH_LEASE_S / 4
CRASHY = {**SLOW_REPLIES, "CHAT_REPLY_LEASE_S": str(CRASH_LEASE_S), "WORKER_TTL_S": str(CRASH_TTL_S)}


@pytest.fixture
async def crashy(database_url: str, connect_to: dict[str, str]) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(database_url=database_url, workers=2, env={**CRASHY, **connect_to}) as proc:
        yield proc


async def first_cut(batch: list[Stream], tasks: list[asyncio.Task[None]]) -> Stream | None:
    """The first stream of `batch` to end cut off, as soon as it has ended; None if none was."""
    pending: set[asyncio.Task[None]] = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for stream, task in zip(batch, tasks, strict=True):
            if task in done and stream.cut:
                return stream
    return None


async def test_sigkill_a_worker_mid_stream(crashy: ServerProcess, owner: asyncpg.Connection) -> None:
    user = await create_user(owner)
    async with crashy.client() as client:
        await create_avatar(client, user, name="Kai")
        streams: list[Stream] = []
        for round_ in range(3):  # until the killed worker was serving at least one stream
            batch = [
                Stream((await create_conversation(client, user))["id"], f"r{round_}-{i}") for i in range(6)
            ]
            started = [asyncio.Event() for _ in batch]
            tasks = [
                asyncio.create_task(open_stream(client, user, s, e))
                for s, e in zip(batch, started, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 15)
            os.kill(crashy.worker_pids()[0], signal.SIGKILL)
            killed_at = time.monotonic()
            # The first stream found cut is retried at once, while the others still stream
            # on the live worker: how soon the takeover happens is then the server's doing,
            # not how long the rest of the batch takes to finish on a loaded machine.
            first = await first_cut(batch, tasks)
            if first is not None:
                await crashy.wait_ready()
                before = await history(client, user, first.conversation_id)
                # Cut off: never complete with half a text; until its lease ends it reads as
                # streaming, then as interrupted.
                assert before[1]["status"] in ("streaming", "interrupted")
                # The killed worker's liveness row stops being renewed: once it has expired
                # (WORKER_TTL_S), a retry with the same key takes the cut reply over, long
                # before its lease would have ended. Until then the reply is someone's: 409.
                retried = await send(client, user, first.conversation_id, first.key, key=first.key)
                while retried.status_code == 409 and time.monotonic() - killed_at < CRASH_LEASE_S:
                    assert retried.json()["error"]["code"] == "send_in_progress"
                    await asyncio.sleep(0.1)
                    retried = await send(client, user, first.conversation_id, first.key, key=first.key)
                taken_over_after = time.monotonic() - killed_at
                assert retried.status_code == 201, retried.text
                assert taken_over_after < TAKEOVER_BOUND_S, f"took {taken_over_after:.1f} s"
                assert retried.json()["assistant_message"]["status"] == "complete"
            await asyncio.gather(*tasks)
            streams += batch
            if first is not None:
                break
            await crashy.wait_ready()
        cut = [s for s in streams if s.cut]
        assert cut and first is not None, "no stream was on the killed worker three times in a row"
        await crashy.wait_ready()

        for stream in streams:
            acknowledged = stream.acknowledged
            assert acknowledged is not None  # every stream got its user_message before the kill
            messages = await history(client, user, stream.conversation_id)
            assert messages[0]["id"] == acknowledged["id"]  # acknowledged => saved
            reply = messages[1]
            if stream.cut and stream is not first:
                assert reply["status"] in ("streaming", "interrupted")
            else:
                assert reply["status"] == "complete"  # the first cut one: taken over above
        cut.remove(first)
        cut.insert(0, first)

        # Left alone, the others read as interrupted once their lease ended; a retry then
        # completes the same reply (same message, same seq).
        await asyncio.sleep(max(0.0, killed_at + CRASH_LEASE_S + 0.5 - time.monotonic()))
        for stream in cut[1:]:
            messages = await history(client, user, stream.conversation_id)
            assert messages[1]["status"] == "interrupted"
            retried = await send(client, user, stream.conversation_id, stream.key, key=stream.key)
            assert retried.status_code == 201, retried.text
            reply = retried.json()["assistant_message"]
            assert (reply["id"], reply["status"]) == (messages[1]["id"], "complete")
            assert stream.key in reply["content"]
        for stream in cut:
            after = await history(client, user, stream.conversation_id)
            assert [(m["role"], m["status"]) for m in after] == [
                ("user", "complete"),
                ("assistant", "complete"),
            ]


async def test_sigterm_lets_streams_finish_and_loses_nothing(
    database_url: str, owner: asyncpg.Connection
) -> None:
    env = {**SLOW_REPLIES, "SHUTDOWN_GRACE_S": "15"}
    server = ServerProcess(database_url=database_url, workers=2, env=env)
    await server.start()
    user = await create_user(owner)
    async with server.client() as client:
        await create_avatar(client, user)
        streams = [Stream((await create_conversation(client, user))["id"], f"t-{i}") for i in range(4)]
        started = [asyncio.Event() for _ in streams]
        tasks = [
            asyncio.create_task(open_stream(client, user, s, e))
            for s, e in zip(streams, started, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 15)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        await asyncio.gather(*tasks)
        code = await server.stop(timeout_s=30)
        elapsed = time.monotonic() - t0
    assert [s.cut for s in streams] == [False] * 4, "in-flight streams must finish"
    assert code == 0
    assert elapsed < 15
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=server.base_url) as late:
            await late.get("/health")
    for stream in streams:
        rows = await owner.fetch(
            "select m.role::text as role, m.status::text as status, c.title from public.messages m"
            " join public.conversations c on c.id = m.conversation_id"
            " where m.conversation_id = $1 order by m.seq",
            stream.conversation_id,
        )
        assert [(r["role"], r["status"]) for r in rows] == [("user", "complete"), ("assistant", "complete")]
        assert rows[0]["title"] == stream.key  # the post-commit title task ran before exit
