"""The two throughput workloads, each for the API, the database floor and hello world:
a persona switch (PATCH) and a chat turn (POST, JSON answer). Request sets for the load
runner, the servers and users they run against, a first request per user checking
each server answers as it should, and chat turns measured settled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tests.support.factories import User

from bench.harness.cli import step
from bench.harness.clients import SequentialClient
from bench.harness.database import ReplyCounter, message_counts
from bench.harness.load import HttpRequest, RequestSet
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.throughput import Measured, Target, measure
from bench.harness.users import (
    PERSONALITIES,
    create_avatars,
    create_conversations,
    create_users,
    users_in_database,
)

Kind = Literal["app", "floor", "hello"]

PERSONA_PATHS: dict[Kind, str] = {"app": "/avatars/me/persona", "floor": "/floor/persona", "hello": "/hello"}
TURN_PATHS: dict[Kind, str] = {
    "app": "/conversations/{id}/messages",
    "floor": "/floor/conversations/{id}/messages",
    "hello": "/hello/turn",
}
# How the load runs' lines name each server's workload.
PERSONA_LABELS: dict[Kind, str] = {
    "hello": "hello PATCH /hello",
    "floor": "floor PATCH /floor/persona",
    "app": "PATCH /avatars/me/persona",
}
TURN_LABELS: dict[Kind, str] = {
    "hello": "hello POST /hello/turn",
    "floor": "floor POST .../messages",
    "app": "POST .../messages",
}
MESSAGES = tuple(
    f"Message {i}: tell me something nice about today, and keep it short please." for i in range(4)
)


def _headers(kind: Kind, user: User) -> dict[str, str]:
    """The same headers for all three (the floor reads X-User-Id, not the token)."""
    headers = {"Authorization": f"Bearer {user.token}", "Content-Type": "application/json"}
    if kind == "floor":
        headers["X-User-Id"] = str(user.id)
    return headers


def _body(data: dict[str, str]) -> str:
    return json.dumps(data, separators=(",", ":"))


def persona_requests(kind: Kind, users: Sequence[User]) -> RequestSet:
    """PATCH of the personality, the variants alternating over all personalities."""
    return [
        [
            HttpRequest("PATCH", PERSONA_PATHS[kind], _headers(kind, user), _body({"personality": p}))
            for p in PERSONALITIES
        ]
        for user in users
    ]


def turn_requests(
    kind: Kind, users: Sequence[User], conversations: Sequence[str], texts: Sequence[str] = MESSAGES
) -> RequestSet:
    """A JSON send to each user's conversation (`conversations[i]` is user i's), a few
    message texts (`texts`) alternating; no Idempotency-Key."""
    return [
        [
            HttpRequest(
                "POST",
                TURN_PATHS[kind].format(id=conversation),
                _headers(kind, user),
                _body({"content": text}),
            )
            for text in texts
        ]
        for user, conversation in zip(users, conversations, strict=True)
    ]


@dataclass(frozen=True)
class Baselines:
    """What a throughput workload runs against: `--users` users with avatars, and the API
    with its two baselines, the database floor and hello world."""

    dsn: str
    users: list[User]
    app: Server
    floor: Server
    hello: Server

    def targets(self, labels: dict[Kind, str], requests: Callable[[Kind], RequestSet]) -> list[Target]:
        """The workload on each server, in the order hello, floor, app."""
        servers: dict[Kind, Server] = {"hello": self.hello, "floor": self.floor, "app": self.app}
        return [Target(kind, labels[kind], server, requests(kind)) for kind, server in servers.items()]


def users_and_servers(session: BenchSession, args: argparse.Namespace) -> Baselines:
    """A database with `--users` users with avatars; the API, the floor and hello with
    `--workers` workers each."""
    dsn, users = users_in_database(session, args.users)
    with step(f"servers ({args.workers} worker(s) each)"):
        app = session.start_app(workers=args.workers)
        floor = session.start_floor(workers=args.workers, window=args.floor_window)
        hello = session.start_hello(workers=args.workers)
    with step("avatars"):
        asyncio.run(create_avatars(app.base_url, users))
    return Baselines(dsn, users, app, floor, hello)


def numbered_message(i: int) -> bytes:
    """The JSON body of a sequential benchmark's i-th send."""
    text = f"Message {i}: tell me something nice about today, and keep it short please."
    return json.dumps({"content": text}).encode()


@dataclass
class Sequential:
    """The set-up of a sequential benchmark: servers with one worker each, and one user
    with an avatar and, for each measured server, a warm-up conversation and `count`
    conversations for the measured turns to rotate over."""

    app: Server
    floor: Server
    hello: Server | None
    user: User
    warm: dict[str, str]
    rotation: dict[str, list[str]]


def sequential_setup(
    session: BenchSession, kinds: Sequence[str], count: int, *, hello: bool, floor_window: int
) -> Sequential:
    with step("database"):
        session.database()
    with step("servers (1 worker each)"):
        app = session.start_app(workers=1)
        floor = session.start_floor(workers=1, window=floor_window)
        baseline = session.start_hello(workers=1) if hello else None
    with step(f"user, avatar, {count} conversations for each of {', '.join(kinds)}"):
        (user,) = asyncio.run(create_users(session.dsn, session.jwt_secret, 1))
        asyncio.run(create_avatars(app.base_url, [user]))
        (ids,) = create_conversations(app.base_url, [user], len(kinds) * (count + 1))
    warm = {kind: ids[i] for i, kind in enumerate(kinds)}
    rotation = {kind: ids[len(kinds) + i :: len(kinds)] for i, kind in enumerate(kinds)}
    return Sequential(app, floor, baseline, user, warm, rotation)


# --------------------------------------------------------------------------- checks


def persona_answer_ok(request: HttpRequest, answer: dict[str, Any]) -> bool:
    return bool(answer.get("personality") == json.loads(request.body)["personality"])


def turn_answer_ok(request: HttpRequest, answer: dict[str, Any]) -> bool:
    reply = answer.get("assistant_message") or {}
    return bool(reply.get("status") == "complete" and reply.get("content"))


def check_once(
    server: Server,
    requests: RequestSet,
    status: int,
    answer_ok: Callable[[HttpRequest, dict[str, Any]], bool],
) -> int:
    """Each user's first request once before measuring: `server` answers `status` with
    what was asked. Returns how many requests it sent."""
    client = SequentialClient(server.port)
    try:
        for variants in requests:
            request = variants[0]
            code, body, _ = client.request(
                request.method, request.path, request.body.encode(), request.headers
            )
            if code != status or not answer_ok(request, json.loads(body)):
                raise RuntimeError(f"{server.name} {request.method} {request.path}: {code} {body[:300]!r}")
    finally:
        client.close()
    return len(requests)


# --------------------------------------------------------------------------- settled turns


@dataclass(frozen=True)
class SettledTurns:
    measured: Measured
    before: dict[str, dict[str, int]]  # per target, its conversations' messages by status
    after: dict[str, dict[str, int]]


def measure_settled_turns(
    session: BenchSession,
    name: str,
    targets: list[Target],
    args: argparse.Namespace,
    dsn: str,
    conversations: Mapping[str, Sequence[str]],
    *,
    client: str,
    answer_ok: Callable[[HttpRequest, dict[str, Any]], bool],
    also_metered: Sequence[Server] = (),
) -> SettledTurns:
    """Chat turns (`turn_requests`, each target's in `conversations[target.key]`): a first
    turn each (201, `answer_ok`), then the rounds (`throughput.measure`, wrk with
    `--turn-connections` connections, a user each), each run from a settled start to a
    settled end: the turns in flight when wrk stops (up to one a connection, 1-2 s each at
    these loads) finish before the next run and count in this one's CPU per turn, as
    completed turns (`database.ReplyCounter`). The targets' messages by status before the
    rounds and after them, for `database.replies_line`."""
    with step("a first turn each"):
        for target in targets:
            check_once(target.server, target.requests, 201, answer_ok)
        before = {key: message_counts(dsn, ids) for key, ids in conversations.items()}
    counter = ReplyCounter(dsn)
    try:
        measured = measure(
            session,
            name,
            targets,
            args,
            connections=args.turn_connections,
            client=client,
            affinity=True,
            also_metered=also_metered,
            settle=lambda target: counter.settled(conversations[target.key]),
        )
    finally:
        counter.close()
    after = {key: message_counts(dsn, ids) for key, ids in conversations.items()}
    return SettledTurns(measured, before, after)
