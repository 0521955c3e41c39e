"""What the database says, on connections of their own (as the owner): a statement's
rows, the avatars' versions, the messages by status, and whether they add up to the
answers a load client counted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import asyncpg
from tests.support.factories import User


async def query(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """One statement on a connection of its own (as the owner)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def write_counters(dsn: str) -> Counter[str]:
    """Postgres's activity counters of this database: rows inserted, updated and deleted
    per table (`<schema>.<table> ins|upd|del`), calls of each tracked function
    (`<schema>.<function>() calls`, with `track_functions`) and transactions committed
    (`transactions`). A backend reports its counts when a transaction ends, at most once a
    second, and an idle one within 10 s: read them that long after the work."""
    tables = (
        "select schemaname || '.' || relname as name, n_tup_ins as ins, n_tup_upd as upd,"
        " n_tup_del as del from pg_stat_user_tables"
    )
    functions = "select schemaname || '.' || funcname || '()' as name, calls from pg_stat_user_functions"
    database = "select xact_commit from pg_stat_database where datname = current_database()"
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        counters: Counter[str] = Counter()
        for row in await conn.fetch(tables):
            for kind in ("ins", "upd", "del"):
                counters[f"{row['name']} {kind}"] = int(row[kind])
        for row in await conn.fetch(functions):
            counters[f"{row['name']} calls"] = int(row["calls"])
        counters["transactions"] = int(await conn.fetchval(database))
    finally:
        await conn.close()
    return counters


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


class ReplyCounter:
    """Complete replies in a set of conversations, counted once none of their replies is in
    flight (`throughput.measure(settle=...)`), on one connection kept open for it (polling
    it forks no backend) on a loop of its own. `close()` when done."""

    _SQL = (
        "select count(*) filter (where status = 'complete') as complete,"
        " count(*) filter (where status = 'streaming') as streaming"
        " from public.messages where conversation_id = any($1::uuid[]) and role = 'assistant'"
    )

    def __init__(self, dsn: str) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._conn: asyncpg.Connection = self._loop.run_until_complete(asyncpg.connect(dsn))
        except BaseException:
            self._loop.close()
            raise

    def settled(self, conversations: Sequence[str], *, quiet_s: float = 0.3, timeout_s: float = 120) -> int:
        """The complete replies once no reply is `streaming` and their count has not changed
        for `quiet_s` (a send not yet at begin_turn has no row: the quiet time covers it)."""
        ids = [uuid.UUID(c) for c in conversations]
        deadline = time.monotonic() + timeout_s
        last: int | None = None
        while True:
            row = self._loop.run_until_complete(self._conn.fetchrow(self._SQL, ids))
            assert row is not None  # an aggregate without GROUP BY has one row
            complete, streaming = int(row["complete"]), int(row["streaming"])
            if not streaming and complete == last:
                return complete
            if time.monotonic() > deadline:
                raise TimeoutError(f"replies still in flight after {timeout_s:.0f} s ({streaming} streaming)")
            last = None if streaming else complete
            time.sleep(quiet_s)

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._conn.close(timeout=5))
        finally:
            self._loop.close()


def reply_statuses(dsn: str, conversations: Sequence[str]) -> dict[str, str]:
    """The status of the (last) reply in each of these conversations, by conversation."""
    sql = (
        "select distinct on (conversation_id) conversation_id::text as c, status::text as s"
        " from public.messages where conversation_id = any($1::uuid[]) and role = 'assistant'"
        " order by conversation_id, seq desc"
    )
    rows = asyncio.run(query(dsn, sql, [uuid.UUID(c) for c in conversations]))
    return {row["c"]: row["s"] for row in rows}


def versions_line(label: str, increments: int, ok: int, slack: int, whose: str = "") -> str:
    """Whether the avatars' versions advanced once per counted 2xx answer of a persona
    switch; up to `slack` more are requests still in flight when a run ended."""
    fine = ok <= increments <= ok + slack
    return (
        f"  database{label}: avatar versions advanced by {increments} for {ok} counted 2xx answers{whose}"
        f" (up to {slack} more may be in flight at the ends of runs)" + ("" if fine else "  <-- MISMATCH")
    )


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
