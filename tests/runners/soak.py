"""Soak test with a ledger: many clients, several servers (each `avatar-chat serve
--workers N`) on one Postgres, reached directly or through a transaction-mode pgbouncer
(`--pooler`), while Postgres restarts and workers are SIGKILLed.

The clients' mix: sends (JSON or SSE), and on another server than the one generating the
reply:
- resume: send with SSE, read a few deltas, leave, then `GET .../stream` with
  `Last-Event-ID` on another server; the text the client already had plus what the resume
  brings (after a `reset`: from scratch) must be, when it ends with `done`, exactly the
  saved reply;
- stop: send with SSE, read a few deltas, `POST .../stop` on another server while the
  first stream goes on; the answer must be the reply `stopped` (or already `complete`)
  once CHAT_STOP_WAIT_S is over, its text the start of the reply, at least what the first
  stream had shown before asking, and exactly what that stream ended with;
- regenerate: after an acknowledged send, `POST .../regenerate` with an Idempotency-Key on
  another server (retried like a send until acknowledged; a `not_latest` refusal is fine,
  another client sent to the conversation meanwhile).

Every acknowledged message (sends, stopped replies, regenerations) goes in the ledger. At
the end the database must hold each exactly once with the text the client was given,
gap-free `seq` per conversation, no reply that is `complete` but truncated, exactly one
current reply per user message (the latest acknowledged regeneration, or one tried after
it), no second reply to a send that was retried. Partial saves are not assumed: a resume
must only converge to the saved final text.

A fault (a Postgres restart, or the SIGKILL of the worker generating the reply, during the
action or shortly before) excuses a stop that did not settle in time or saved less than
its stream had shown, and a resume that ended with `error` (the reply was cut off; the
client then retries the send); without a fault either is a violation. Nothing excuses
lost, duplicated, gapped or cut text.

A short run is part of the test suite (tests/reliability/test_soak.py), once direct and
once through the pooler. A long run (`--workers` is per server, `--servers` 2 by default):

    .venv/bin/python -m tests.runners.soak --seconds 600 --clients 24 --workers 3 [--pooler]

prints a JSON report (messages acknowledged, actions and their outcomes, faults injected,
every violation found) and exits non-zero if there was any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import offline_reply
from avatar_chat.ops.embedded import EmbeddedPostgres
from avatar_chat.ops.migrate import migrate
from tests.support.factories import avatar_snapshot
from tests.support.pooler import PgBouncer
from tests.support.servers import ServerProcess
from tests.support.sse import sse_records

SECRET = "soak-secret-" + "s" * 40
LEASE_S = 2.0  # CHAT_REPLY_LEASE_S of the servers
STOP_WAIT_S = 3.0  # CHAT_STOP_WAIT_S of the servers
# How long after a fault a stop may still be found unsettled because of it: the lease of a
# reply whose worker is gone, plus a reconnection.
FAULT_REACH_S = LEASE_S + 1.5
# A message whose offline reply is about 12 chunks long (it repeats up to 80 characters).
LONG = "tell me everything about the sea, the ships, the storms and the lighthouses"
NETWORK_ERRORS = (httpx.TransportError, httpx.StreamError)


@dataclass
class SoakConfig:
    seconds: float = 20.0
    clients: int = 8
    users: int = 4
    conversations_per_user: int = 2
    servers: int = 2  # `avatar-chat serve` processes; resume, stop and regenerate go to another one
    workers: int = 2  # worker processes of each server (2 or more: a SIGKILLed one is replaced)
    pooler: bool = False  # through pgbouncer in transaction mode
    pooler_pool_size: int = 5  # its server connections
    chunk_delay_ms: int = 150  # the offline provider's pause between chunks
    resume_share: float = 0.2
    stop_share: float = 0.2
    regenerate_share: float = 0.2
    restart_every_s: float = 8.0
    restart_downtime_s: float = 1.0
    kill_every_s: float = 5.0
    drain_s: float = 60.0
    seed: int = 1


@dataclass
class Ack:
    """An acknowledged send: its user message and reply as the client was given them."""

    conversation_id: str
    asked: str
    user_message_id: str
    reply_id: str
    content: str
    status: str = "complete"  # `stopped`: a reply stopped on another server
    server: int = 0  # the server that answered


@dataclass
class Regeneration:
    key: str
    conversation_id: str
    user_message_id: str
    acknowledged_reply_id: str | None = None
    content: str = ""
    outcome: str = ""


@dataclass
class Resume:
    key: str
    reply_id: str
    attempt: int | None  # the attempt the first stream showed
    text: str
    outcome: str
    sent: float  # when the send began
    ended: float


@dataclass
class StopRecord:
    key: str
    reply_id: str
    attempt: int | None  # the attempt the first stream showed
    seen: str  # the text the first stream had shown before the stop was asked
    sent: float  # when the send began
    started: float  # when the stop was asked
    answered: float | None = None
    answer_status: str | None = None
    answer_content: str = ""
    stream_end: str | None = None
    stream_done: dict[str, Any] | None = None


@dataclass
class ShortDone:
    """A stream whose `done` (a reply that did not complete) holds less than its deltas."""

    reply_id: str
    attempt: int | None
    opened: float
    ended: float
    problem: str


@dataclass
class Fault:
    start: float
    end: float
    pid: int | None  # the worker killed; None: Postgres restarted (every worker)


@dataclass
class SoakReport:
    acknowledged: int = 0
    attempts: int = 0
    unacknowledged_at_end: int = 0
    postgres_restarts: int = 0
    worker_kills: int = 0
    # Streams that ended with `error` (after some text, so of a known attempt), and of those
    # how many had their reply saved `complete` by that same attempt all the same (issue #17:
    # never, once the database is back within DB_ACQUIRE_TIMEOUT_S).
    stream_errors: int = 0
    stream_errors_for_complete_replies: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    resumes: dict[str, int] = field(default_factory=dict)
    stops: dict[str, int] = field(default_factory=dict)
    stop_answer_s: dict[str, float] = field(default_factory=dict)
    regenerations: dict[str, int] = field(default_factory=dict)
    responses: dict[str, int] = field(default_factory=dict)
    # Violations: each must stay empty.
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    seq_gaps: list[str] = field(default_factory=list)
    truncated_complete: list[str] = field(default_factory=list)
    acknowledged_reply_not_complete: list[str] = field(default_factory=list)
    acknowledged_text_differs: list[str] = field(default_factory=list)
    stream_mismatch: list[str] = field(default_factory=list)
    resume_mismatch: list[str] = field(default_factory=list)
    resume_failed_without_a_fault: list[str] = field(default_factory=list)
    stop_unsettled: list[str] = field(default_factory=list)
    stop_text: list[str] = field(default_factory=list)
    regenerations_lost: list[str] = field(default_factory=list)
    current_variants: list[str] = field(default_factory=list)
    duplicated_replies: list[str] = field(default_factory=list)
    unexpected_answers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def violations(self) -> dict[str, list[str]]:
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), list) and v}

    @property
    def ok(self) -> bool:
        return not self.violations()


@dataclass
class _User:
    id: uuid.UUID
    token: str
    conversations: list[str]
    avatar_name: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class _Run:
    """What every client shares: the servers' clients, the ledger, the counters."""

    report: SoakReport
    https: list[httpx.AsyncClient]
    ledger: dict[str, Ack] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    resume_outcomes: Counter[str] = field(default_factory=Counter)
    stop_outcomes: Counter[str] = field(default_factory=Counter)
    regeneration_outcomes: Counter[str] = field(default_factory=Counter)
    resumes: list[Resume] = field(default_factory=list)
    stops: list[StopRecord] = field(default_factory=list)
    regenerations: list[Regeneration] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    short_dones: list[ShortDone] = field(default_factory=list)
    stream_errors: list[tuple[str, int, str]] = field(default_factory=list)  # reply, attempt, code

    def other(self, rng: random.Random, server: int) -> int:
        """Another server than `server` (the same one when there is only one)."""
        if len(self.https) == 1:
            return server
        return (server + 1 + rng.randrange(len(self.https) - 1)) % len(self.https)

    def faulted(self, start: float, end: float, pid: int | None) -> bool:
        """Whether a fault could reach a reply generated by worker `pid` (None: unknown)
        between `start` and `end`."""
        for fault in self.faults:
            if fault.pid is not None and pid is not None and fault.pid != pid:
                continue
            if fault.start - 0.5 <= end and start <= fault.end:
                return True
        return False


async def run_soak(cfg: SoakConfig) -> SoakReport:
    rng = random.Random(cfg.seed)
    report = SoakReport()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="avatar-chat-soak-") as tmp:
        pg = EmbeddedPostgres(Path(tmp), stop_on_exit=False)
        dsn = await asyncio.to_thread(pg.start)
        # Everything started is stopped on the way out, also when the run fails: in reverse
        # order, client tasks first, then the servers, the pooler, Postgres.
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(_stop_postgres, pg)
            await migrate(dsn)
            app_dsn, env = dsn, {}
            if cfg.pooler:
                pooler = PgBouncer(dsn, pool_size=cfg.pooler_pool_size)
                stack.push_async_callback(pooler.stop)
                await pooler.start()
                app_dsn, env = pooler.dsn, {"DB_POOL_MODE": "transaction"}
            servers = [
                ServerProcess(
                    database_url=app_dsn,
                    jwt_secret=SECRET,
                    workers=cfg.workers,
                    env={
                        **env,
                        "OFFLINE_LLM_CHUNK_DELAY_MS": str(cfg.chunk_delay_ms),
                        "CHAT_TURN_DEADLINE_S": "10",
                        "CHAT_REPLY_LEASE_S": str(LEASE_S),
                        "CHAT_STOP_WAIT_S": str(STOP_WAIT_S),
                        "DB_ACQUIRE_TIMEOUT_S": "1",
                        "DB_CONNECT_TIMEOUT_S": "1",
                        "DB_STATEMENT_TIMEOUT_MS": "3000",
                        "SHUTDOWN_GRACE_S": "2",
                    },
                )
                for _ in range(cfg.servers)
            ]
            for server in servers:
                stack.push_async_callback(_stop_server, server)
            started_servers = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
            for outcome in started_servers:
                if isinstance(outcome, BaseException):
                    raise outcome
            https = [await stack.enter_async_context(_http(s)) for s in servers]
            run = _Run(report, https)
            users = await _setup_users(dsn, https[0], cfg)
            stop = asyncio.Event()
            tasks: list[asyncio.Task[None]] = []
            stack.push_async_callback(_cancel, tasks)

            async def faults() -> None:
                next_restart = time.monotonic() + cfg.restart_every_s
                next_kill = time.monotonic() + cfg.kill_every_s
                while not stop.is_set():
                    now = time.monotonic()
                    if cfg.restart_every_s and now >= next_restart:
                        await asyncio.to_thread(pg.stop)
                        report.postgres_restarts += 1
                        await asyncio.sleep(cfg.restart_downtime_s)
                        await asyncio.to_thread(pg.resume)
                        run.faults.append(Fault(now, time.monotonic() + FAULT_REACH_S, None))
                        next_restart = time.monotonic() + cfg.restart_every_s
                    elif cfg.kill_every_s and now >= next_kill:
                        workers = [pid for s in servers for pid in s.worker_pids()]
                        if workers:
                            pid = rng.choice(workers)
                            os.kill(pid, signal.SIGKILL)
                            run.faults.append(Fault(now, now + FAULT_REACH_S, pid))
                            report.worker_kills += 1
                        next_kill = time.monotonic() + cfg.kill_every_s
                    await asyncio.sleep(0.1)

            clients = [
                asyncio.create_task(_client_loop(run, cfg, users, index, stop))
                for index in range(cfg.clients)
            ]
            tasks += clients
            injector = asyncio.create_task(faults())
            tasks.append(injector)
            await asyncio.sleep(cfg.seconds)
            stop.set()
            await injector
            # Clients finish what they are on (retrying until acknowledged, or drained).
            done, still = await asyncio.wait(clients, timeout=cfg.drain_s)
            for task in still:
                task.cancel()
            for task in done:
                task.result()
            report.unacknowledged_at_end = len(run.pending)
            report.acknowledged = len(run.ledger)
            report.responses = dict(sorted(run.statuses.items()))
            report.actions = dict(sorted(run.actions.items()))
            report.regenerations = dict(sorted(run.regeneration_outcomes.items()))
            await _verify(dsn, run)
            report.resumes = dict(sorted(run.resume_outcomes.items()))
            report.stops = dict(sorted(run.stop_outcomes.items()))
            answered = [s.answered - s.started for s in run.stops if s.answered is not None]
            if answered:
                report.stop_answer_s = {
                    "p50": round(statistics.median(answered), 2),
                    "max": round(max(answered), 2),
                }
    report.seconds = round(time.monotonic() - started, 1)
    return report


async def _stop_postgres(pg: EmbeddedPostgres) -> None:
    with contextlib.suppress(Exception):  # already stopped (a run that failed mid-restart)
        await asyncio.to_thread(pg.stop)


async def _stop_server(server: ServerProcess) -> None:
    if server.proc is not None:
        await server.stop()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _http(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        timeout=httpx.Timeout(15.0),
        limits=httpx.Limits(max_keepalive_connections=0, max_connections=200),
    )


async def _setup_users(dsn: str, http: httpx.AsyncClient, cfg: SoakConfig) -> list[_User]:
    conn = await asyncpg.connect(dsn)
    users: list[_User] = []
    try:
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


# --- the clients ----------------------------------------------------------------------


async def _client_loop(
    run: _Run, cfg: SoakConfig, users: list[_User], index: int, stop: asyncio.Event
) -> None:
    crng = random.Random(cfg.seed * 1000 + index)
    n = 0
    while not stop.is_set():
        user = crng.choice(users)
        conversation = crng.choice(user.conversations)
        key = f"c{index}-{n}-{uuid.uuid4().hex[:6]}"
        n += 1
        home = crng.randrange(len(run.https))
        roll = crng.random()
        ack: Ack | None = None
        if roll < cfg.resume_share:
            action, asked = "resume", f"{key} {LONG}"
        elif roll < cfg.resume_share + cfg.stop_share:
            action, asked = "stop", f"{key} {LONG}"
        elif roll < cfg.resume_share + cfg.stop_share + cfg.regenerate_share:
            action, asked = "regenerate", key
        else:
            action, asked = "send", key
        run.actions[action] += 1
        run.pending.add(key)
        if action == "resume":
            ack = await _resume_action(run, crng, user, conversation, key, asked, home)
        elif action == "stop":
            ack = await _stop_action(run, crng, user, conversation, key, asked, home)
        if ack is None:
            ack = await _send_until_acknowledged(
                run, user, conversation, key, asked, first=home, stream=crng.random() < 0.5, rng=crng
            )
        run.ledger[key] = ack
        run.pending.discard(key)
        if action == "regenerate":
            for i in range(1 + (crng.random() < 0.3)):
                if stop.is_set():
                    break
                regeneration = await _regenerate(run, crng, user, ack, f"{key}-r{i}")
                if regeneration.acknowledged_reply_id is None:
                    break
                ack = Ack(
                    ack.conversation_id,
                    ack.asked,
                    ack.user_message_id,
                    regeneration.acknowledged_reply_id,
                    regeneration.content,
                    server=ack.server,
                )


class _Events:
    """One SSE response read as a client does: the text so far (from what it had before),
    the last event id, and how the stream ended (None while it goes on). Every `delta` and
    `done` id must be `<attempt>:<characters so far>`, and a `done` must hold the text the
    deltas made: anything else is a violation (stream_mismatch), except a `done` of a reply
    that did not complete, which a fault may explain (see _verify_short_dones)."""

    def __init__(
        self, response: httpx.Response, run: _Run, *, text: str = "", last_id: str | None = None
    ) -> None:
        self._events = aiter(sse_records(response))
        self._run = run
        self._problems = run.report.stream_mismatch
        self._opened = time.monotonic()
        self.text = text
        self.last_id = last_id
        self.attempt: int | None = int(last_id.split(":")[0]) if last_id else None
        self.deltas = 0
        self.resets = 0
        self.end: str | None = None  # done, error, cut
        self.done: dict[str, Any] | None = None
        self.error_code: str | None = None
        self.user_message_id: str | None = None
        self.reply_id: str | None = None

    async def read(self, until_deltas: int | None = None) -> None:
        while self.end is None and (until_deltas is None or self.deltas < until_deltas):
            try:
                name, data, event_id = await anext(self._events)
            except (StopAsyncIteration, ValueError, *NETWORK_ERRORS):  # ValueError: cut mid-event
                self.end = "cut"
                return
            if name == "user_message":
                self.user_message_id = data["id"]
            elif name == "assistant_message":
                self.reply_id = data["id"]
            elif name == "reset":
                self.text, self.attempt, self.last_id = "", data["attempt"], event_id
                self.resets += 1
            elif name == "delta":
                self.text += data["content"]
                self.deltas += 1
                self._check_id(event_id, len(self.text))
                self.last_id = event_id
            elif name == "done":
                self.reply_id = data["id"]
                self.done, self.end = data, "done"
                self._check_id(event_id, len(data["content"]))
                if data["content"] != self.text:
                    problem = (
                        f"{data['id']}: done ({data['status']}) has {len(data['content'])} characters,"
                        f" the deltas made {len(self.text)}: {data['content']!r} != {self.text!r}"
                    )
                    if data["status"] == "complete":
                        self._problems.append(problem)
                    else:
                        self._run.short_dones.append(
                            ShortDone(data["id"], self.attempt, self._opened, time.monotonic(), problem)
                        )
            elif name == "error":
                self.end, self.error_code = "error", data["code"]
                if self.reply_id is not None and self.attempt is not None:
                    self._run.stream_errors.append((self.reply_id, self.attempt, data["code"]))

    def _check_id(self, event_id: str | None, length: int) -> None:
        attempt = (event_id or "").partition(":")[0]
        if self.attempt is None and attempt.isdigit():
            self.attempt = int(attempt)
        if event_id != f"{self.attempt}:{length}":
            self._problems.append(f"{self.reply_id}: event id {event_id} at {self.attempt}:{length}")


@contextlib.asynccontextmanager
async def _sse(
    http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], json_body: Any = None
) -> AsyncIterator[httpx.Response]:
    async with http.stream(
        method, url, json=json_body, headers={**headers, "Accept": "text/event-stream"}
    ) as response:
        yield response


async def _send_until_acknowledged(
    run: _Run,
    user: _User,
    conversation: str,
    key: str,
    asked: str,
    *,
    first: int,
    stream: bool,
    rng: random.Random,
) -> Ack:
    """Send (and retry with the same key, on any server) until the exchange is acknowledged."""
    headers = {**user.headers, "Idempotency-Key": key}
    url = f"/conversations/{conversation}/messages"
    delay = 0.1
    server = first
    while True:
        run.report.attempts += 1
        try:
            if stream:
                async with _sse(run.https[server], "POST", url, headers, {"content": asked}) as response:
                    run.statuses[f"sse_{response.status_code}"] += 1
                    if response.status_code == 201:
                        events = _Events(response, run)
                        await events.read()
                        if events.end == "error":
                            run.statuses[f"sse_error_{events.error_code}"] += 1
                        elif events.end == "cut":
                            run.statuses["sse_cut"] += 1
                        elif events.done is not None and events.user_message_id is not None:
                            return _ack(conversation, asked, events.user_message_id, events.done, server)
                    else:
                        await response.aread()
                        _transient(run, f"send {key}", response)
            else:
                response = await run.https[server].post(url, json={"content": asked}, headers=headers)
                run.statuses[str(response.status_code)] += 1
                if response.status_code == 201:
                    body = response.json()
                    return _ack(
                        conversation, asked, body["user_message"]["id"], body["assistant_message"], server
                    )
                _transient(run, f"send {key}", response)
        except NETWORK_ERRORS:
            run.statuses["connection_error"] += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
        server = rng.randrange(len(run.https))


def _ack(conversation: str, asked: str, user_message_id: str, reply: dict[str, Any], server: int) -> Ack:
    return Ack(conversation, asked, user_message_id, reply["id"], reply["content"], reply["status"], server)


async def _resume_action(
    run: _Run, rng: random.Random, user: _User, conversation: str, key: str, asked: str, home: int
) -> Ack | None:
    """Send with SSE on `home`, leave after a few deltas, resume on another server with
    what was received. None when the exchange is still to be acknowledged by a retry."""
    headers = {**user.headers, "Idempotency-Key": key}
    url = f"/conversations/{conversation}/messages"
    run.report.attempts += 1
    sent = time.monotonic()
    try:
        async with _sse(run.https[home], "POST", url, headers, {"content": asked}) as response:
            run.statuses[f"sse_{response.status_code}"] += 1
            if response.status_code != 201:
                await response.aread()
                _transient(run, f"send {key}", response)
                run.resume_outcomes["send_refused"] += 1
                return None
            first = _Events(response, run)
            await first.read(until_deltas=rng.randint(1, 3))
    except NETWORK_ERRORS:
        run.statuses["connection_error"] += 1
        run.resume_outcomes["send_cut"] += 1
        return None
    if first.end == "done" and first.done is not None and first.user_message_id is not None:
        run.resume_outcomes["finished_before_leaving"] += 1
        return _ack(conversation, asked, first.user_message_id, first.done, home)
    if first.end == "error" or first.reply_id is None or first.user_message_id is None:
        run.resume_outcomes["send_failed"] += 1
        return None
    run.resume_outcomes["left_while_streaming" if first.end is None else "send_cut"] += 1
    await asyncio.sleep(rng.uniform(0, 0.3))
    other = run.other(rng, home)
    text, last_id = first.text, first.last_id
    follow_url = f"{url}/{first.reply_id}/stream"
    give_up_at = time.monotonic() + 30
    while time.monotonic() < give_up_at:
        resume_headers = dict(user.headers)
        if last_id is not None:
            resume_headers["Last-Event-ID"] = last_id
        try:
            async with _sse(run.https[other], "GET", follow_url, resume_headers) as response:
                run.statuses[f"follow_{response.status_code}"] += 1
                if response.status_code == 200:
                    events = _Events(response, run, text=text, last_id=last_id)
                    events.reply_id = first.reply_id
                    await events.read()
                    text, last_id = events.text, events.last_id
                    run.resume_outcomes["resets"] += events.resets
                    if events.end == "done" and events.done is not None:
                        run.resume_outcomes["done"] += 1
                        if len(text) > len(first.text):
                            run.resume_outcomes["done_with_text_resumed"] += 1
                        run.resumes.append(
                            Resume(key, first.reply_id, first.attempt, text, "done", sent, time.monotonic())
                        )
                        if events.done["status"] != "complete":
                            run.resume_outcomes[f"done_{events.done['status']}"] += 1
                            return None
                        return _ack(conversation, asked, first.user_message_id, events.done, other)
                    if events.end == "error":
                        run.resume_outcomes[f"error_{events.error_code}"] += 1
                        outcome = f"error_{events.error_code}"
                        run.resumes.append(
                            Resume(key, first.reply_id, first.attempt, text, outcome, sent, time.monotonic())
                        )
                        return None
                    run.resume_outcomes["resume_cut"] += 1
                else:
                    await response.aread()
                    if not _transient(run, f"resume {key}", response):
                        break
        except NETWORK_ERRORS:
            run.statuses["connection_error"] += 1
        await asyncio.sleep(0.2)
    run.resume_outcomes["gave_up"] += 1
    return None


async def _stop_action(
    run: _Run, rng: random.Random, user: _User, conversation: str, key: str, asked: str, home: int
) -> Ack | None:
    """Send with SSE on `home`; after a few deltas, stop the reply on another server while
    the stream goes on. None when the exchange is still to be acknowledged by a retry."""
    headers = {**user.headers, "Idempotency-Key": key}
    url = f"/conversations/{conversation}/messages"
    run.report.attempts += 1
    other = run.other(rng, home)
    sent = time.monotonic()
    try:
        async with _sse(run.https[home], "POST", url, headers, {"content": asked}) as response:
            run.statuses[f"sse_{response.status_code}"] += 1
            if response.status_code != 201:
                await response.aread()
                _transient(run, f"send {key}", response)
                run.stop_outcomes["send_refused"] += 1
                return None
            events = _Events(response, run)
            await events.read(until_deltas=rng.randint(1, 3))
            if events.reply_id is None or events.user_message_id is None:
                run.stop_outcomes["send_cut"] += 1
                return None
            if events.end is not None:
                run.stop_outcomes[f"stream_ended_{events.end}_before_stop"] += 1
            record = StopRecord(key, events.reply_id, events.attempt, events.text, sent, time.monotonic())
            rest = asyncio.create_task(events.read())
            answer = await _ask_stop(run, user, f"{url}/{events.reply_id}/stop", other)
            record.answered = time.monotonic()
            if answer is not None:
                record.answer_status, record.answer_content = answer["status"], answer["content"]
            try:
                await asyncio.wait_for(rest, STOP_WAIT_S + 15)
            except TimeoutError:
                run.stop_outcomes["stream_did_not_end"] += 1
    except NETWORK_ERRORS:
        run.statuses["connection_error"] += 1
        run.stop_outcomes["send_cut"] += 1
        return None
    record.stream_end, record.stream_done = events.end, events.done
    run.stops.append(record)
    if answer is None:
        run.stop_outcomes["not_answered"] += 1
        return None
    if answer["status"] in ("stopped", "complete"):
        return _ack(conversation, asked, events.user_message_id, answer, other)
    return None  # still streaming, or cut off: the client retries the send


async def _ask_stop(run: _Run, user: _User, url: str, server: int) -> dict[str, Any] | None:
    """POST .../stop, retried a few times on a failure to answer."""
    for _ in range(3):
        try:
            response = await run.https[server].post(url, headers=user.headers)
            run.statuses[f"stop_{response.status_code}"] += 1
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
            if not _transient(run, f"stop {url}", response):
                return None
        except NETWORK_ERRORS:
            run.statuses["connection_error"] += 1
        await asyncio.sleep(0.3)
    return None


async def _regenerate(run: _Run, rng: random.Random, user: _User, ack: Ack, key: str) -> Regeneration:
    """Regenerate the acknowledged reply `ack` with Idempotency-Key `key`, first on another
    server than the one that answered, until acknowledged or refused (`not_latest`)."""
    regeneration = Regeneration(key, ack.conversation_id, ack.user_message_id)
    run.regenerations.append(regeneration)
    run.pending.add(key)
    headers = {**user.headers, "Idempotency-Key": key}
    url = f"/conversations/{ack.conversation_id}/messages/{ack.reply_id}/regenerate"
    stream = rng.random() < 0.5
    server = run.other(rng, ack.server)
    delay = 0.1
    try:
        while True:
            run.report.attempts += 1
            reply: dict[str, Any] | None = None
            code: str | None = None
            refused = False
            try:
                if stream:
                    async with _sse(run.https[server], "POST", url, headers) as response:
                        run.statuses[f"regenerate_sse_{response.status_code}"] += 1
                        if response.status_code == 201:
                            events = _Events(response, run)
                            await events.read()
                            reply = events.done
                        else:
                            await response.aread()
                            code = _error_code(response)
                            refused = not _regeneration_transient(run, key, response)
                else:
                    response = await run.https[server].post(url, headers=headers)
                    run.statuses[f"regenerate_{response.status_code}"] += 1
                    if response.status_code == 201:
                        reply = response.json()["assistant_message"]
                    else:
                        code = _error_code(response)
                        refused = not _regeneration_transient(run, key, response)
            except NETWORK_ERRORS:
                run.statuses["connection_error"] += 1
            if reply is not None:
                regeneration.acknowledged_reply_id, regeneration.content = reply["id"], reply["content"]
                regeneration.outcome = "acknowledged"
                run.regeneration_outcomes["acknowledged"] += 1
                return regeneration
            if refused:
                # Nothing was admitted (an admitted key is answered by its own reply): another
                # client sent to the conversation since (not_latest), or something unexpected.
                regeneration.outcome = code or "refused"
                run.regeneration_outcomes[regeneration.outcome] += 1
                return regeneration
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            server = rng.randrange(len(run.https))
    finally:
        run.pending.discard(key)


# What a request may be answered besides success while faults come and go: the reply
# is still being generated, too many at once, the database or a worker is away.
_TRANSIENT = frozenset({"send_in_progress", "rate_limited"})


def _transient(run: _Run, what: str, response: httpx.Response) -> bool:
    """Whether an answer that is not a success is one to retry; the others are recorded."""
    if response.status_code >= 500:
        return True
    code = _error_code(response)
    if response.status_code in (409, 429) and code in _TRANSIENT:
        return True
    run.report.unexpected_answers.append(f"{what}: {response.status_code} {code}")
    return False


def _regeneration_transient(run: _Run, key: str, response: httpx.Response) -> bool:
    if response.status_code == 409 and _error_code(response) in ("not_latest", "reply_in_progress"):
        return False
    return _transient(run, f"regenerate {key}", response)


def _error_code(response: httpx.Response) -> str | None:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(code)


# --- the checks -----------------------------------------------------------------------


async def _verify(dsn: str, run: _Run) -> None:
    report, ledger = run.report, run.ledger
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
            elif found[0]["id"] != ack.user_message_id or found[0]["content"] != ack.asked:
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
            "select r.id::text, r.status::text as status, r.content, r.attempt, r.variant, r.is_current,"
            " r.idempotency_key, r.reply_to::text, w.pid as worker_pid,"
            " coalesce(r.persona_version, a.version) as persona_version,"
            " coalesce(r.personality, a.personality)::text as personality,"
            " u.content as asked, a.name, c.mode::text as mode"
            " from public.messages r join public.messages u on u.id = r.reply_to"
            " join public.conversations c on c.id = r.conversation_id"
            " join public.avatars a on a.user_id = r.user_id"
            " left join avatar_chat.workers w on w.id = r.worker_id where r.role = 'assistant'"
        )
    finally:
        await conn.close()

    by_id = {reply["id"]: reply for reply in replies}
    for reply in replies:
        if reply["status"] == "complete" and reply["content"] != _full_text(reply):
            report.truncated_complete.append(reply["id"])
    acked = [(key, ack.reply_id, ack.status, ack.content) for key, ack in ledger.items()]
    for r in run.regenerations:
        if r.acknowledged_reply_id is not None:
            acked.append((r.key, r.acknowledged_reply_id, "complete", r.content))
    for key, reply_id, status, content in acked:
        saved = by_id.get(reply_id)
        if saved is None:
            report.lost.append(f"{key}: reply {reply_id}")
        elif saved["status"] != status:
            report.acknowledged_reply_not_complete.append(
                f"{key}: {reply_id} {saved['status']}, acked {status}"
            )
        elif saved["content"] != content:
            report.acknowledged_text_differs.append(f"{key}: {reply_id}")

    for resume in run.resumes:
        saved = by_id.get(resume.reply_id)
        if resume.outcome == "done" and (saved is None or saved["content"] != resume.text):
            report.resume_mismatch.append(
                f"{resume.key}: resumed {resume.text!r}, saved {saved['content'] if saved else None!r}"
            )
        elif resume.outcome != "done":
            # A reply cut off (its worker or the database went away): only a fault explains it.
            pid = saved["worker_pid"] if saved is not None and saved["attempt"] == resume.attempt else None
            if run.faulted(resume.sent, resume.ended, pid):
                run.resume_outcomes["error_excused_by_a_fault"] += 1
            else:
                report.resume_failed_without_a_fault.append(f"{resume.key}: {resume.outcome}")

    report.stream_errors = len(run.stream_errors)
    saved_anyway: Counter[str] = Counter()
    for reply_id, attempt, code in run.stream_errors:
        saved = by_id.get(reply_id)
        if saved is not None and saved["attempt"] == attempt and saved["status"] == "complete":
            saved_anyway[code] += 1
    report.stream_errors_for_complete_replies = dict(saved_anyway)
    _verify_stops(run, by_id)
    _verify_short_dones(run, by_id)
    _verify_variants(run, replies)


def _full_text(reply: asyncpg.Record) -> str:
    """The whole offline reply a reply row is (or would have been, completed)."""
    snapshot = avatar_snapshot(
        name=reply["name"], personality=reply["personality"], version=reply["persona_version"]
    )
    return offline_reply(ChatRequest(snapshot, reply["mode"], (PromptMessage("user", reply["asked"]),)))


def _verify_stops(run: _Run, by_id: dict[str, asyncpg.Record]) -> None:
    report, outcomes = run.report, run.stop_outcomes
    for stop in run.stops:
        saved = by_id.get(stop.reply_id)
        # The worker generating the reply when it was asked to stop (when the row still says).
        pid = saved["worker_pid"] if saved is not None and saved["attempt"] == stop.attempt else None
        faulted = run.faulted(stop.sent, stop.answered or stop.started, pid)
        status = stop.answer_status
        outcomes[f"answered_{status}" if status else "not_answered"] += 1
        if status is None:
            continue
        if status not in ("stopped", "complete"):
            if faulted:
                outcomes["unsettled_excused_by_a_fault"] += 1
            else:
                report.stop_unsettled.append(f"{stop.key}: {stop.reply_id} answered {status}")
            continue
        content = stop.answer_content
        if saved is not None and not _full_text(saved).startswith(content):
            report.stop_text.append(f"{stop.key}: {content!r} does not start the reply")
        if not content.startswith(stop.seen):
            if faulted:
                outcomes["saved_less_than_shown_excused_by_a_fault"] += 1
            else:
                report.stop_text.append(f"{stop.key}: shown {stop.seen!r}, saved {content!r}")
        if stop.stream_done is not None and (
            stop.stream_done["content"],
            stop.stream_done["status"],
        ) != (content, status):
            report.stop_text.append(
                f"{stop.key}: its stream ended {stop.stream_done['status']} {stop.stream_done['content']!r},"
                f" the stop answered {status} {content!r}"
            )
        if not faulted:
            outcomes["checked_without_a_fault"] += 1


def _verify_short_dones(run: _Run, by_id: dict[str, asyncpg.Record]) -> None:
    """A stream that showed more than its reply was saved with, ending `done` with the
    reply `stopped`: the reply was stopped by another worker from its last saved text,
    which happens only when the generating worker looked gone (its lease or liveness row
    lapsed: a fault). Without a fault it is a violation."""
    for short in run.short_dones:
        saved = by_id.get(short.reply_id)
        pid = saved["worker_pid"] if saved is not None and saved["attempt"] == short.attempt else None
        if run.faulted(short.opened, short.ended, pid):
            run.stop_outcomes["stream_showed_more_than_saved_excused_by_a_fault"] += 1
        else:
            run.report.stream_mismatch.append(short.problem)


def _verify_variants(run: _Run, replies: list[asyncpg.Record]) -> None:
    """One current reply per user message; every reply but the first a regeneration we
    asked for; the current one the latest acknowledged regeneration or one tried after it."""
    report = run.report
    tried: dict[str, list[Regeneration]] = {}
    for regeneration in run.regenerations:
        tried.setdefault(regeneration.user_message_id, []).append(regeneration)
    keys = {r.key for r in run.regenerations}
    by_user_message: dict[str, list[asyncpg.Record]] = {}
    for reply in replies:
        by_user_message.setdefault(reply["reply_to"], []).append(reply)
    for user_message_id, variants in by_user_message.items():
        current = [v for v in variants if v["is_current"]]
        if len(current) != 1:
            report.current_variants.append(f"{user_message_id}: {len(current)} current replies")
        firsts = [v for v in variants if v["idempotency_key"] is None]
        others = [v["idempotency_key"] for v in variants if v["idempotency_key"] is not None]
        if len(firsts) != 1 or any(key not in keys for key in others):
            report.duplicated_replies.append(
                f"{user_message_id}: {len(firsts)} first replies, regenerations {others}"
            )
        attempts = tried.get(user_message_id, [])
        last_acked = max((i for i, r in enumerate(attempts) if r.acknowledged_reply_id), default=None)
        if last_acked is not None and len(current) == 1:
            allowed = {r.key for r in attempts[last_acked:] if r is attempts[last_acked] or not r.outcome}
            if current[0]["idempotency_key"] not in allowed:
                report.current_variants.append(
                    f"{user_message_id}: current {current[0]['idempotency_key']}, acknowledged {allowed}"
                )
    for regeneration in run.regenerations:
        if regeneration.acknowledged_reply_id is None:
            continue
        saved = [
            v
            for v in by_user_message.get(regeneration.user_message_id, [])
            if v["idempotency_key"] == regeneration.key
        ]
        if [v["id"] for v in saved] != [regeneration.acknowledged_reply_id]:
            report.regenerations_lost.append(
                f"{regeneration.key}: acknowledged {regeneration.acknowledged_reply_id},"
                f" saved {[v['id'] for v in saved]}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = SoakConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = SoakConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    report = asyncio.run(run_soak(cfg))
    print(json.dumps({**asdict(report), "ok": report.ok, "config": asdict(cfg)}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
