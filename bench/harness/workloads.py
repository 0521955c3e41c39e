"""The two throughput workloads, each for the API, the database floor and hello world:
a persona switch (PATCH) and a chat turn (POST, JSON answer). Request sets for the load
runner, a first request per user checking each server answers as it should, and what
the database says afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from tests.factories import User

from bench.harness.cli import step
from bench.harness.clients import SequentialClient
from bench.harness.load import HttpRequest, RequestSet
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.users import PERSONALITIES, create_avatars, create_conversations, create_users

Kind = Literal["app", "floor", "hello"]

PERSONA_PATHS: dict[Kind, str] = {"app": "/avatars/me/persona", "floor": "/floor/persona", "hello": "/hello"}
TURN_PATHS: dict[Kind, str] = {
    "app": "/conversations/{id}/messages",
    "floor": "/floor/conversations/{id}/messages",
    "hello": "/hello/turn",
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


def turn_requests(kind: Kind, users: Sequence[User], conversations: Sequence[str]) -> RequestSet:
    """A JSON send to each user's conversation (`conversations[i]` is user i's), a few
    message texts alternating; no Idempotency-Key."""
    return [
        [
            HttpRequest(
                "POST",
                TURN_PATHS[kind].format(id=conversation),
                _headers(kind, user),
                _body({"content": text}),
            )
            for text in MESSAGES
        ]
        for user, conversation in zip(users, conversations, strict=True)
    ]


def users_and_servers(
    session: BenchSession, args: argparse.Namespace
) -> tuple[list[User], Server, Server, Server]:
    """A database with `--users` users with avatars; the API, the floor and hello with
    `--workers` workers each."""
    with step("database"):
        dsn = session.database()
    with step(f"{args.users} users"):
        users = asyncio.run(create_users(dsn, session.jwt_secret, args.users))
    with step(f"servers ({args.workers} worker(s) each)"):
        app = session.start_app(workers=args.workers)
        floor = session.start_floor(workers=args.workers, window=args.floor_window)
        hello = session.start_hello(workers=args.workers)
    with step("avatars"):
        asyncio.run(create_avatars(app.base_url, users))
    return users, app, floor, hello


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


# --------------------------------------------------------------------------- database


async def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """One statement on a connection of its own (as the owner)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def avatar_versions(dsn: str, users: Sequence[User]) -> int:
    """The sum of the users' avatar versions (every update bumps one by one)."""
    sql = "select coalesce(sum(version), 0) as n from public.avatars where user_id = any($1::uuid[])"
    (row,) = asyncio.run(query(dsn, sql, [u.id for u in users]))
    return int(row["n"])


def message_counts(dsn: str, conversations: Sequence[str]) -> dict[str, int]:
    """Messages in these conversations by `role status` (e.g. `assistant complete`)."""
    sql = (
        "select role::text || ' ' || status::text as k, count(*) as n from public.messages"
        " where conversation_id = any($1::uuid[]) group by 1"
    )
    rows = asyncio.run(query(dsn, sql, [uuid.UUID(c) for c in conversations]))
    return {row["k"]: int(row["n"]) for row in rows}


def replies_line(label: str, before: dict[str, int], after: dict[str, int], ok: int, slack: int) -> str:
    """Whether the database holds one complete reply (and one user message) per counted
    2xx answer; up to `slack` more are requests still in flight when a run ended."""

    def delta(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    complete, users = delta("assistant complete"), delta("user complete")
    others = {k: delta(k) for k in after.keys() | before.keys() if delta(k) and k.split()[1] != "complete"}
    fine = ok <= complete <= ok + slack and users == complete and not others
    return (
        f"  database, {label}: {complete} complete replies and {users} user messages for {ok} counted"
        f" 2xx answers (up to {slack} more may be in flight at the ends of runs)"
        + (f"; other replies: {others}" if others else "")
        + ("" if fine else "  <-- MISMATCH")
    )
