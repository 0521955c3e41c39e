"""Soak test with a ledger: many clients, several workers, while Postgres restarts and
workers are killed. Every acknowledged message goes in the ledger; at the end the
database must hold each exactly once, with gap-free `seq` per conversation and no reply
that is `complete` but truncated.

A short run is part of the test suite (tests/reliability/test_soak.py). A long run:

    .venv/bin/python -m tests.runners.soak --seconds 600 --clients 24 --workers 3

prints a JSON report (messages acknowledged, faults injected, lost, duplicated, ...)
and exits non-zero if anything was lost, duplicated, gapped or truncated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import offline_reply
from avatar_chat.ops.embedded import EmbeddedPostgres
from avatar_chat.ops.migrate import migrate
from tests.support.factories import avatar_snapshot
from tests.support.servers import ServerProcess
from tests.support.sse import sse_events

SECRET = "soak-secret-" + "s" * 40


@dataclass
class SoakConfig:
    seconds: float = 20.0
    clients: int = 8
    users: int = 4
    conversations_per_user: int = 2
    workers: int = 2
    restart_every_s: float = 8.0
    restart_downtime_s: float = 1.0
    kill_every_s: float = 5.0
    drain_s: float = 60.0
    seed: int = 1


@dataclass
class Ack:
    conversation_id: str
    user_message_id: str
    reply_id: str


@dataclass
class SoakReport:
    acknowledged: int = 0
    attempts: int = 0
    unacknowledged_at_end: int = 0
    postgres_restarts: int = 0
    worker_kills: int = 0
    responses: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    seq_gaps: list[str] = field(default_factory=list)
    truncated_complete: list[str] = field(default_factory=list)
    acknowledged_reply_not_complete: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.seq_gaps
            or self.truncated_complete
            or self.acknowledged_reply_not_complete
        )


@dataclass
class _User:
    id: uuid.UUID
    token: str
    conversations: list[str]
    avatar_name: str


async def run_soak(cfg: SoakConfig) -> SoakReport:
    rng = random.Random(cfg.seed)
    report = SoakReport()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="avatar-chat-soak-") as tmp:
        pg = EmbeddedPostgres(Path(tmp), stop_on_exit=False)
        dsn = await asyncio.to_thread(pg.start)
        server: ServerProcess | None = None
        try:
            await migrate(dsn)
            server = ServerProcess(
                database_url=dsn,
                jwt_secret=SECRET,
                workers=cfg.workers,
                env={
                    "OFFLINE_LLM_CHUNK_DELAY_MS": "15",
                    "CHAT_TURN_DEADLINE_S": "3",
                    "CHAT_REPLY_LEASE_S": "2",
                    "DB_ACQUIRE_TIMEOUT_S": "1",
                    "DB_CONNECT_TIMEOUT_S": "1",
                    "DB_STATEMENT_TIMEOUT_MS": "3000",
                    "SHUTDOWN_GRACE_S": "2",
                },
            )
            await server.start()
            users = await _setup_users(dsn, server, cfg)
            ledger: dict[str, Ack] = {}
            pending: set[str] = set()
            statuses: Counter[str] = Counter()
            stop = asyncio.Event()

            async def client_loop(index: int) -> None:
                crng = random.Random(cfg.seed * 1000 + index)
                async with _http(server) as http:
                    n = 0
                    while not stop.is_set():
                        user = crng.choice(users)
                        conversation = crng.choice(user.conversations)
                        key = f"c{index}-{n}-{uuid.uuid4().hex[:6]}"
                        n += 1
                        pending.add(key)
                        ack = await _send_until_acknowledged(
                            http,
                            user,
                            conversation,
                            key,
                            statuses,
                            report,
                            deadline=None,
                            stream=crng.random() < 0.5,
                        )
                        if ack is not None:
                            ledger[key] = ack
                            pending.discard(key)

            async def faults() -> None:
                assert server is not None
                next_restart = time.monotonic() + cfg.restart_every_s
                next_kill = time.monotonic() + cfg.kill_every_s
                while not stop.is_set():
                    now = time.monotonic()
                    if cfg.restart_every_s and now >= next_restart:
                        await asyncio.to_thread(pg.stop)
                        report.postgres_restarts += 1
                        await asyncio.sleep(cfg.restart_downtime_s)
                        await asyncio.to_thread(pg.resume)
                        next_restart = time.monotonic() + cfg.restart_every_s
                    elif cfg.kill_every_s and now >= next_kill:
                        workers = server.worker_pids()
                        if workers:
                            os.kill(rng.choice(workers), signal.SIGKILL)
                            report.worker_kills += 1
                        next_kill = time.monotonic() + cfg.kill_every_s
                    await asyncio.sleep(0.1)

            clients = [asyncio.create_task(client_loop(i)) for i in range(cfg.clients)]
            injector = asyncio.create_task(faults())
            await asyncio.sleep(cfg.seconds)
            stop.set()
            await injector
            # Clients finish the send they are on (retrying until acknowledged or drained).
            done, still = await asyncio.wait(clients, timeout=cfg.drain_s)
            for task in still:
                task.cancel()
            for task in done:
                task.result()
            report.unacknowledged_at_end = len(pending)
            report.acknowledged = len(ledger)
            report.responses = dict(statuses)
            await _verify(dsn, ledger, report)
        finally:
            if server is not None and server.proc is not None:
                await server.stop()
            await asyncio.to_thread(pg.stop)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _http(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        timeout=httpx.Timeout(15.0),
        limits=httpx.Limits(max_keepalive_connections=0, max_connections=10),
    )


async def _setup_users(dsn: str, server: ServerProcess, cfg: SoakConfig) -> list[_User]:
    conn = await asyncpg.connect(dsn)
    users: list[_User] = []
    try:
        async with _http(server) as http:
            for i in range(cfg.users):
                user_id = uuid.uuid4()
                await conn.execute(
                    "insert into auth.users (id, email) values ($1, $2)", user_id, f"soak{i}@x.test"
                )
                token = mint_access_token(SECRET, user_id=user_id, email=None, ttl_s=24 * 3600)
                headers = {"Authorization": f"Bearer {token}"}
                name = f"Soak{i}"
                response = await http.post(
                    "/avatars/me", json={"name": name, "personality": "witty"}, headers=headers
                )
                response.raise_for_status()
                conversations = []
                for _ in range(cfg.conversations_per_user):
                    created = await http.post("/conversations", json={"mode": "companion"}, headers=headers)
                    created.raise_for_status()
                    conversations.append(created.json()["id"])
                users.append(_User(user_id, token, conversations, name))
    finally:
        await conn.close()
    return users


async def _send_until_acknowledged(
    http: httpx.AsyncClient,
    user: _User,
    conversation: str,
    key: str,
    statuses: Counter[str],
    report: SoakReport,
    *,
    deadline: float | None,
    stream: bool,
) -> Ack | None:
    headers = {"Authorization": f"Bearer {user.token}", "Idempotency-Key": key}
    url = f"/conversations/{conversation}/messages"
    delay = 0.1
    while deadline is None or time.monotonic() < deadline:
        report.attempts += 1
        try:
            if stream:
                ack = await _send_streaming(http, url, key, headers, statuses, conversation)
            else:
                response = await http.post(url, json={"content": key}, headers=headers)
                statuses[str(response.status_code)] += 1
                ack = None
                if response.status_code == 201:
                    body = response.json()
                    ack = Ack(conversation, body["user_message"]["id"], body["assistant_message"]["id"])
            if ack is not None:
                return ack
        except (httpx.TransportError, httpx.StreamError):
            statuses["connection_error"] += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    return None


async def _send_streaming(
    http: httpx.AsyncClient,
    url: str,
    key: str,
    headers: dict[str, str],
    statuses: Counter[str],
    conversation: str,
) -> Ack | None:
    sse_headers = {**headers, "Accept": "text/event-stream"}
    async with http.stream("POST", url, json={"content": key}, headers=sse_headers) as response:
        statuses[f"sse_{response.status_code}"] += 1
        if response.status_code != 201:
            await response.aread()
            return None
        user_message_id = None
        async for event, data in sse_events(response):
            if event == "user_message":
                user_message_id = data["id"]
            elif event == "done" and user_message_id is not None:
                return Ack(conversation, user_message_id, data["id"])
            elif event == "error":
                statuses[f"sse_error_{data['code']}"] += 1
                return None
    statuses["sse_cut"] += 1
    return None


async def _verify(dsn: str, ledger: dict[str, Ack], report: SoakReport) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "select id::text, conversation_id::text, idempotency_key, content"
            " from public.messages where role = 'user'"
        )
        by_key: dict[str, list[asyncpg.Record]] = {}
        for row in rows:
            by_key.setdefault(row["idempotency_key"], []).append(row)
        for key, ack in ledger.items():
            found = by_key.get(key, [])
            if not found:
                report.lost.append(key)
            elif len(found) > 1:
                report.duplicated.append(key)
            elif found[0]["id"] != ack.user_message_id or found[0]["content"] != key:
                report.lost.append(key)
        report.duplicated += [k for k, v in by_key.items() if len(v) > 1 and k not in ledger]

        for row in await conn.fetch(
            "select c.id::text as id, c.last_seq, array_agg(m.seq order by m.seq) as seqs"
            " from public.conversations c left join public.messages m on m.conversation_id = c.id"
            " group by c.id, c.last_seq"
        ):
            seqs = [s for s in row["seqs"] if s is not None]
            if seqs != list(range(1, row["last_seq"] + 1)):
                report.seq_gaps.append(row["id"])

        replies = await conn.fetch(
            "select r.id::text, r.status::text as status, r.content, r.persona_version, r.personality::text"
            " as personality, u.content as asked, a.name, c.mode::text as mode"
            " from public.messages r join public.messages u on u.id = r.reply_to"
            " join public.conversations c on c.id = r.conversation_id"
            " join public.avatars a on a.user_id = r.user_id where r.role = 'assistant'"
        )
        acked_replies = {ack.reply_id for ack in ledger.values()}
        for reply in replies:
            if reply["status"] == "complete":
                snapshot = avatar_snapshot(
                    name=reply["name"], personality=reply["personality"], version=reply["persona_version"]
                )
                request = ChatRequest(snapshot, reply["mode"], (PromptMessage("user", reply["asked"]),))
                if reply["content"] != offline_reply(request):
                    report.truncated_complete.append(reply["id"])
            elif reply["id"] in acked_replies:
                report.acknowledged_reply_not_complete.append(reply["id"])
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = SoakConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = SoakConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    report = asyncio.run(run_soak(cfg))
    print(json.dumps({**asdict(report), "ok": report.ok, "config": asdict(cfg)}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
