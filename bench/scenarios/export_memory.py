"""What GET /me/export holds in memory, and how soon it starts (issue #21: "an account with
100,000 messages exports with worker RSS growing by less than 50 MB"; "the first bytes
arrive within a second for any account size").

One `avatar-chat serve --workers 1` (so the worker's RSS is the export's; with one worker
uvicorn serves in the process it started), EXPORTS_PER_DAY=0. Two users, each with an
avatar (through the API) and an account made in SQL as the database owner, conversation by
conversation (`insert ... select generate_series(...)`; each message gets its seq from
messages_assign_seq; `avatar_chat.importing` is set for the transaction so that
messages_enforce_limits counts no model call), each message ~300 characters of chat text
(excerpts of `chat_texts.REPLY`, numbered), user and assistant alternating, and a usage
record per assistant message:

- `large`: `--export-messages` (100,000) messages in conversations of
  `--export-per-conversation` (1,000);
- `small`, the baseline: `--export-small` (1,000) messages, the same conversation size.

Each account is exported `--rounds` (2) times, the order alternating (large first in the
first round: the worker's first export ever is the large one). Each export: the worker's
RSS sampled (VmRSS, /proc/<pid>/status) every 20 ms for 0.5 s before (its median is the
idle RSS) and throughout the export; one client (httpx, streaming) reads the archive as it
comes, timing the first body byte and the last; then the archive must be a valid zip
(`testzip`) whose export.json counts equal what its files hold and what the account holds.
Reported per export: idle and peak RSS, peak growth over the idle RSS, time to first byte,
total time, archive size, API and Postgres CPU (/proc process trees) per 1,000 messages;
then per account the worst growth and first byte, the medians of the rest, and large /
small (in the table's `app` and `floor` columns).

    .venv/bin/python -m bench.scenarios.export_memory [--export-messages 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.factories import User

from bench.harness.chat_texts import REPLY
from bench.harness.cli import scenario_main, step
from bench.harness.cpu import CpuMeter
from bench.harness.report import Goal, Row, conclude, fmt_ratio
from bench.harness.servers import Server
from bench.harness.session import BenchSession
from bench.harness.users import create_avatars, users_in_database

NAME = "export_memory"
SERVER = "avatar-chat"
ACCOUNTS = ("large", "small")
SAMPLE_S = 0.02  # RSS sampling interval
IDLE_S = 0.5  # idle RSS sampled this long before each export
CHARS = 300  # per message
RSS_GOAL = Goal("app", "<=", 50, " MiB")  # the large account's peak growth
FIRST_BYTE_GOAL = Goal("app", "<=", 1000, " ms")


@dataclass
class Export:
    """One account's export, `repeats` times in a row (the small account's, so that its
    CPU time is not a few clock ticks): times per export, RSS and CPU over them all."""

    account: str
    messages: int  # exported, over the repeats
    repeats: int
    first_byte_ms: float  # the worst
    total_s: float  # the median
    archive_bytes: int
    idle_rss_mib: float
    peak_rss_mib: float
    after_rss_mib: float  # once the export ended
    samples: int
    cpu_s: dict[str, float]  # per process tree, over the export
    counts: dict[str, int]

    @property
    def growth_mib(self) -> float:
        return self.peak_rss_mib - self.idle_rss_mib

    def cpu_ms_per_1000(self, tree: str) -> float:
        return self.cpu_s.get(tree, 0.0) * 1000 / (self.messages / 1000)


def worker_pid(server: Server) -> int:
    """The process that serves: the one `serve` started (uvicorn serves in it with one
    worker), or its spawned worker if it has one."""
    assert server.proc is not None
    pid = server.proc.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_text()
        except OSError:
            continue
        if "spawn_main" in cmdline or "multiprocessing" in cmdline:
            return int(child)
    return pid


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler:
    """VmRSS of one process every SAMPLE_S, in a thread, while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(vm_rss_mib(self.pid))
            self._stop.wait(SAMPLE_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(vm_rss_mib(self.pid))


async def fill_account(dsn: str, user: User, messages: int, per_conversation: int) -> None:
    """`messages` messages in conversations of `per_conversation`, a usage record per
    assistant message; as the owner, one transaction per conversation."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        left, i = messages, 0
        while left > 0:
            count = min(left, per_conversation)
            async with conn.transaction():
                await conn.execute("select set_config('avatar_chat.importing', 'on', true)")
                conversation = await conn.fetchval(
                    "insert into public.conversations (user_id, title, mode)"
                    " values ($1, $2, 'companion') returning id",
                    user.id,
                    f"export bench {i}",
                )
                await conn.execute(
                    "insert into public.messages (conversation_id, user_id, role, content)"
                    " select $1, $2,"
                    "   case when n % 2 = 1 then 'user' else 'assistant' end::public.message_role,"
                    "   left(n || '. ' || substr($3, 1 + (n * 37) % 700, $4), $4)"
                    " from generate_series(1, $5::int) n",
                    conversation,
                    user.id,
                    REPLY,
                    CHARS,
                    count,
                )
                await conn.execute(
                    "insert into public.usage_records (user_id, conversation_id, message_id, kind, model,"
                    " plan, prompt_tokens, completion_tokens, source, status)"
                    " select m.user_id, m.conversation_id, m.id, 'reply', 'bench-model', 'free',"
                    "   800 + m.seq::int, 75, 'estimate', 'complete'"
                    " from public.messages m where m.conversation_id = $1 and m.role = 'assistant'",
                    conversation,
                )
            left -= count
            i += 1
    finally:
        await conn.close()


def check_archive(data: bytes, messages: int, conversations: int) -> dict[str, int]:
    """A valid zip whose export.json counts what its files hold, and what the account holds."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    bad = archive.testzip()
    if bad is not None:
        raise RuntimeError(f"the archive's {bad} is corrupt")
    counts: dict[str, int] = json.loads(archive.read("export.json"))["counts"]
    files = [n for n in archive.namelist() if n.startswith("conversations/")]
    held = {
        "conversations": len(files),
        "messages": sum(len(json.loads(archive.read(n))["messages"]) for n in files),
        "usage_records": len(json.loads(archive.read("usage.json"))["records"]),
        "avatar_versions": len(json.loads(archive.read("avatar.json"))["history"]),
    }
    expected = {
        "conversations": conversations,
        "messages": messages,
        "usage_records": messages // 2,
        "avatar_versions": 1,
    }
    if not counts == held == expected:
        raise RuntimeError(f"export.json counts {counts}, the files hold {held}, the account {expected}")
    return counts


def _stream(client: httpx.Client, user: User) -> tuple[bytes, float, float]:
    """The archive, the seconds to its first body byte and to its last."""
    body = io.BytesIO()
    started = time.perf_counter()
    first_byte = 0.0
    with client.stream("GET", "/me/export", headers=user.headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET /me/export: {response.status_code} {response.read()[:300]!r}")
        for chunk in response.iter_raw():
            if not first_byte:
                first_byte = time.perf_counter() - started
            body.write(chunk)
    return body.getvalue(), first_byte, time.perf_counter() - started


def export(
    server: Server,
    user: User,
    account: str,
    messages: int,
    conversations: int,
    repeats: int,
    pid: int,
    meter: CpuMeter,
) -> Export:
    with RssSampler(pid) as idle:
        time.sleep(IDLE_S)
    archives: list[bytes] = []
    first_bytes: list[float] = []
    totals: list[float] = []
    with httpx.Client(base_url=server.base_url, timeout=600) as client:
        cpu_before = meter.snapshot()
        with RssSampler(pid) as during:
            for _ in range(repeats):
                data, first_byte, total = _stream(client, user)
                archives.append(data)
                first_bytes.append(first_byte)
                totals.append(total)
        cpu_after = meter.snapshot()
    time.sleep(0.2)
    after = vm_rss_mib(pid)
    counts: dict[str, int] = {}
    for data in archives:
        counts = check_archive(data, messages, conversations)
    return Export(
        account=account,
        messages=messages * repeats,
        repeats=repeats,
        first_byte_ms=max(first_bytes) * 1000,
        total_s=statistics.median(totals),
        archive_bytes=len(archives[0]),
        idle_rss_mib=statistics.median(idle.samples),
        peak_rss_mib=max(during.samples),
        after_rss_mib=after,
        samples=len(during.samples),
        cpu_s={name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after},
        counts=counts,
    )


def _line(e: Export) -> str:
    return (
        f"    {e.account:<6}{f' x{e.repeats}' if e.repeats > 1 else '':>4}"
        f" RSS idle {e.idle_rss_mib:6.1f} -> peak {e.peak_rss_mib:6.1f} MiB"
        f" (+{e.growth_mib:5.1f}; {e.after_rss_mib:6.1f} after, {e.samples} samples)"
        f"   first byte {e.first_byte_ms:6.1f} ms   time {e.total_s:6.2f} s"
        f"   archive {e.archive_bytes / 1e6:6.2f} MB"
        f"   CPU ms/1,000 msgs: API {e.cpu_ms_per_1000(SERVER):6.1f},"
        f" Postgres {e.cpu_ms_per_1000('postgres'):6.1f}, client {e.cpu_ms_per_1000('client'):6.1f}"
    )


def run(args: argparse.Namespace) -> list[Row]:
    sizes = {"large": args.export_messages, "small": args.export_small}
    per = args.export_per_conversation
    conversations = {key: -(-n // per) for key, n in sizes.items()}
    exports: list[Export] = []
    with BenchSession(NAME) as session:
        dsn, users = users_in_database(session, len(ACCOUNTS))
        owners = dict(zip(ACCOUNTS, users, strict=True))
        with step("avatar-chat serve --workers 1"):
            server = session.start_app(
                workers=1, env={"EXPORTS_PER_DAY": "0", "EXPORT_TIMEOUT_S": "3600"}, name=SERVER
            )
        pid = worker_pid(server)
        fresh_rss = vm_rss_mib(pid)
        asyncio.run(create_avatars(server.base_url, users))
        for key in ACCOUNTS:
            with step(
                f"{key} account: {sizes[key]:,} messages in {conversations[key]} conversation(s), in SQL"
            ):
                asyncio.run(fill_account(dsn, owners[key], sizes[key], per))
        meter = session.cpu_meter([server])
        # The small account's exports in runs of about a tenth of the large one's messages.
        repeats = {"large": 1, "small": max(1, sizes["large"] // sizes["small"] // 10)}
        for r in range(args.rounds):
            order = ACCOUNTS if r % 2 == 0 else ACCOUNTS[::-1]
            for key in order:
                with step(f"round {r + 1}: export the {key} account ({repeats[key]} time(s))"):
                    exports.append(
                        export(
                            server, owners[key], key, sizes[key], conversations[key], repeats[key], pid, meter
                        )
                    )
        logs = session.server_log_report()

    by = {key: [e for e in exports if e.account == key] for key in ACCOUNTS}
    print()
    print(
        f"{NAME}: avatar-chat serve --workers 1 (worker pid RSS at start {fresh_rss:.1f} MiB);"
        f" large {sizes['large']:,} messages, small {sizes['small']:,}, {per:,} a conversation,"
        f" ~{CHARS} characters each, a usage record per reply; {args.rounds} round(s)"
    )
    for e in exports:
        print(_line(e))
    worst = {key: max(by[key], key=lambda e: e.growth_mib) for key in ACCOUNTS}
    growth = {key: worst[key].growth_mib for key in ACCOUNTS}
    first = {key: max(e.first_byte_ms for e in by[key]) for key in ACCOUNTS}

    def median(key: str, get: Any) -> float:
        return float(statistics.median(get(e) for e in by[key]))

    total = {key: median(key, lambda e: e.total_s) for key in ACCOUNTS}
    size = {key: median(key, lambda e: e.archive_bytes / 1000) for key in ACCOUNTS}
    api = {key: median(key, lambda e: e.cpu_ms_per_1000(SERVER)) for key in ACCOUNTS}
    pg = {key: median(key, lambda e: e.cpu_ms_per_1000("postgres")) for key in ACCOUNTS}
    since_start = max(e.peak_rss_mib for e in by["large"]) - fresh_rss
    print(
        f"  large / small: RSS growth {growth['large']:.1f} / {growth['small']:.1f} MiB (worst export);"
        f" peak over the worker's RSS at start {since_start:.1f} MiB; first byte (worst)"
        f" {first['large']:.1f} / {first['small']:.1f} ms ({fmt_ratio(first['large'] / first['small'])});"
        f" total {total['large']:.2f} / {total['small']:.2f} s ({fmt_ratio(total['large'] / total['small'])},"
        f" messages {sizes['large'] / sizes['small']:.0f}x); CPU per 1,000 messages API"
        f" {fmt_ratio(api['large'] / api['small'])}, Postgres {fmt_ratio(pg['large'] / pg['small'])}"
    )
    print(
        f"  targets: RSS growth < 50 MB for {sizes['large']:,} messages:"
        f" {'met' if growth['large'] < 50 else 'NOT met'} ({growth['large']:.1f} MiB);"
        f" first byte < 1 s: {'met' if max(first.values()) < 1000 else 'NOT met'}"
    )
    rows = [
        Row(NAME, "worker RSS growth, peak over idle", "MiB", growth["large"], goal=RSS_GOAL),
        Row(NAME, "worker RSS growth, small account", "MiB", growth["small"]),
        Row(NAME, "worker RSS peak over its RSS at start", "MiB", since_start),
        Row(NAME, "time to first byte (worst)", "ms", first["large"], first["small"], goal=FIRST_BYTE_GOAL),
        Row(NAME, "export time (median)", "ms", total["large"] * 1000, total["small"] * 1000),
        Row(NAME, "archive size", "KB", size["large"], size["small"]),
        Row(NAME, "API CPU per 1,000 messages", "ms", api["large"], api["small"]),
        Row(NAME, "Postgres CPU per 1,000 messages", "ms", pg["large"], pg["small"]),
    ]
    data = {"fresh_rss_mib": fresh_rss, "exports": [asdict(e) for e in exports]}
    title = f"{NAME} (1 worker; app / floor: {sizes['large']:,} / {sizes['small']:,} messages)"
    return conclude(NAME, title, args, rows, data, logs)


if __name__ == "__main__":
    sys.exit(scenario_main(NAME, __doc__, run))
