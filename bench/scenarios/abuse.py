"""The abuse harness of issue #18 ("Prove it"): 20 well-behaved users chat while one token
does every expensive thing at once; the same 20 users without the abuser in the same run.

Set-up: `avatar-chat serve --workers N` (`--abuse-workers`, 2) on its own embedded
Postgres, with the production defaults of every per-user limit (RATE_LIMIT_SENDS_PER_MINUTE,
MAX_CONCURRENT_STREAMS, MAX_OPEN_STREAMS_PER_USER, RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE,
IMAGE_DECODES_PER_WORKER: the defaults of `Settings`, whatever the bench harness or the
environment set), LLM_PROVIDER=openai at `bench/apps/fake_model.py` (its own process, not
counted as API CPU), which streams every reply as 20 chunks, one every 150 ms (3 s).

Two phases of `--abuse-seconds` (60) each, (a) then (b), a warm-up turn per user first:

  (a) 20 well-behaved users, each in a conversation of its own: send a message (streamed),
      read its reply to `done`, pause 1 s, again (about 15 sends a minute each, under the
      default 30).
  (b) the same 20 users, and one abusive token at once (every loop below pauses
      REFUSED_PAUSE_S after a refused request, none after an answered one):
      - one loop sends in a conversation of its own and then regenerates its latest reply
        without end (REGENERATE_LOOPS (3) more do the same regenerations in parallel);
      - FOLLOWERS (200) clients each follow that reply (`GET .../stream`) while it is
        generated, to its end, then the next one;
      - OPENERS (30) clients each send streamed messages in OPENER_CONVERSATIONS (10) other
        conversations (many open streams), while the chain's reply streams (else they
        would take the user's MAX_CONCURRENT_STREAMS before the chain, and nothing would be
        left to follow);
      - UPLOADERS (4) clients each upload 36-megapixel images (`PUT /avatars/me/image`,
        6000 x 6000 of one colour, PNG and baseline JPEG alternating, made once with Pillow).

Printed, (b) against (a): the well-behaved users' turn time (send to `done`) p50 and p99
(target: within 1.3x) and their turns refused or failed (target: none); database
transactions per second (pg_stat_database xact_commit, read `--stats-wait` (11) s after each
phase, less the idle background measured first) overall and the abuser's share (b - a); the
abuser's requests by kind, status and code; API CPU (the server's process tree, /proc) per
phase, in percent of one core.

    .venv/bin/python -m bench.scenarios.abuse [--abuse-seconds 60] [--abuse-workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop
from PIL import Image
from tests.support.factories import User

from avatar_chat.core.settings import Settings
from bench.harness.burst import raise_open_files_limit
from bench.harness.cli import add_common_args, run_main, step
from bench.harness.cpu import CpuMeter
from bench.harness.database import write_counters
from bench.harness.report import Goal, Row, conclude
from bench.harness.session import BenchSession
from bench.harness.stats import percentile
from bench.harness.users import create_avatars, insert_conversations, users_in_database

NAME = "abuse"
GOOD_USERS = 20
PAUSE_S = 1.0  # a well-behaved user's pause between a reply's `done` and its next send
CHUNKS = 20
CHUNK_INTERVAL_MS = 150
FOLLOWERS = 200
OPENERS = 30
OPENER_CONVERSATIONS = 10
REGENERATE_LOOPS = 3
UPLOADERS = 4
REFUSED_PAUSE_S = 0.5
IMAGE_SIDE = 6000
TIMEOUT_S = 60.0
MESSAGE = "Tell me something nice about today, and keep it short please."
# The limits the abuser meets, at the defaults an operator gets.
LIMITS = (
    "rate_limit_sends_per_minute",
    "max_concurrent_streams",
    "max_open_streams_per_user",
    "rate_limit_image_uploads_per_minute",
    "image_decodes_per_worker",
)
_CODE = re.compile(rb'"code":"([^"]*)"')
_REPLY = re.compile(rb"event: assistant_message\ndata: (\{.*?\})\n\n", re.S)
_ENDS = (b"event: done", b"event: error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This scenario's own options (`python -m bench` adds them to the shared set)."""
    parser.add_argument(
        "--abuse-seconds",
        type=float,
        default=60.0,
        help="abuse: seconds of each phase, without and with the abuser (60)",
    )
    parser.add_argument("--abuse-workers", type=int, default=2, help="abuse: worker processes of the API (2)")


def limit_env() -> dict[str, str]:
    """The per-user limits at `Settings`' defaults (what an operator gets)."""
    return {name.upper(): str(Settings.model_fields[name].default) for name in LIMITS}


# ---- one HTTP exchange on a connection of its own


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer
    end: str  # done, error, cut (a 2xx stream without either), answered (2xx, not a stream),
    # refused (not 2xx), timeout, or the transport error
    code: str = ""
    seconds: float = 0.0  # to the `done`/`error` event, or the end of the answer


def _request(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", content_type: str = "application/json"
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Accept: text/event-stream", "Connection: close"]
    if body:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return "\r\n".join([*lines, "", ""]).encode() + body


def _json(payload: dict[str, str]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


async def exchange(port: int, request: bytes, on_reply: Callable[[str], None] | None = None) -> Answer:
    """Send `request`, read the answer to its end; `on_reply` gets the id of the reply a
    streamed turn announces (`assistant_message`) as soon as it comes."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    ended: float | None = None
    body = bytearray()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(request)
                while chunk := await reader.read(65536):
                    seen = max(0, len(body) - 16)
                    body += chunk
                    if on_reply is not None and (found := _REPLY.search(body)):
                        on_reply(json.loads(found.group(1))["id"])
                        on_reply = None
                    if ended is None and any(end in body[seen:] for end in _ENDS):
                        ended = loop.time()
            finally:
                writer.close()
    except TimeoutError:
        return Answer(_status(body), "timeout", seconds=loop.time() - start)
    except OSError as exc:
        return Answer(_status(body), type(exc).__name__, seconds=loop.time() - start)
    seconds = (ended or loop.time()) - start
    status = _status(body)
    if not 200 <= status < 300:
        code = _CODE.search(body)
        return Answer(status, "refused", code.group(1).decode() if code else "", seconds)
    if b"event: done" in body:
        return Answer(status, "done", "", seconds)
    at = body.find(b"event: error")
    if at >= 0:
        code = _CODE.search(body, at)
        return Answer(status, "error", code.group(1).decode() if code else "?", seconds)
    if b"text/event-stream" in body[: body.find(b"\r\n\r\n")]:
        return Answer(status, "cut", "", seconds)
    return Answer(status, "answered", "", seconds)


def _status(answer: bytes | bytearray) -> int:
    parts = answer[:16].split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


# ---- the phases


@dataclass
class Setup:
    dsn: str
    port: int
    good: list[tuple[User, str]]  # each well-behaved user and its conversation
    abuser: User
    chain: str  # the abuser's conversation of sends and regenerations
    others: list[str]  # its conversations for the many streams
    images: list[tuple[str, bytes]]  # content type, bytes
    meter: CpuMeter


@dataclass
class Phase:
    name: str
    seconds: float = 0.0  # from the start to the deadline
    turns: list[Answer] = field(default_factory=list)  # the well-behaved users'
    abuser: Counter[str] = field(default_factory=Counter)  # `<kind> <status> <end or code>`
    cpu: dict[str, float] = field(default_factory=dict)  # seconds per process tree
    transactions: float = 0.0  # per second, less the idle background

    def done_s(self) -> list[float]:
        return [t.seconds for t in self.turns if t.end == "done"]

    def not_done(self) -> Counter[str]:
        return Counter(f"{t.status} {t.end} {t.code}".strip() for t in self.turns if t.end != "done")

    def cpu_pct(self, process: str) -> float:
        return self.cpu.get(process, 0.0) / self.seconds * 100 if self.seconds else 0.0


async def _good_user(port: int, user: User, conversation: str, deadline: float, turns: list[Answer]) -> None:
    loop = asyncio.get_running_loop()
    request = _request(
        "POST", f"/conversations/{conversation}/messages", user.headers, _json({"content": MESSAGE})
    )
    while loop.time() < deadline:
        turns.append(await exchange(port, request))
        await asyncio.sleep(PAUSE_S)


class Abuser:
    """One token doing everything at once; counts its answers by kind, status and end."""

    def __init__(self, setup: Setup, counts: Counter[str]) -> None:
        self.setup = setup
        self.counts = counts
        self.reply: str | None = None  # the latest reply of the chain conversation
        self.streaming = asyncio.Event()  # set while that reply streams
        self.idle = asyncio.Event()  # set while it does not
        self.headers = setup.abuser.headers

    def _note(self, kind: str, answer: Answer) -> bool:
        """Count `answer`; whether it was refused (or got no answer at all)."""
        what = answer.code if answer.end == "refused" else answer.end
        self.counts[f"{kind} {answer.status} {what}".strip()] += 1
        return answer.end == "refused" or answer.status == 0

    async def _turn(self, kind: str, request: bytes, on_reply: Callable[[str], None] | None = None) -> bool:
        """One request, counted; a pause after a refusal. Whether it was answered."""
        refused = self._note(kind, await exchange(self.setup.port, request, on_reply))
        if refused:
            await asyncio.sleep(REFUSED_PAUSE_S)
        return not refused

    async def chain(self, first: bool) -> None:
        """Send once (the `first` loop), then regenerate the latest reply without end;
        the reply being generated is the one the followers follow."""
        base = f"/conversations/{self.setup.chain}/messages"
        while True:
            started: list[str] = []
            streams = functools.partial(self._streams, started)
            if self.reply is None:
                if not first:
                    await asyncio.sleep(0.1)
                    continue
                send = _request("POST", base, self.headers, _json({"content": MESSAGE}))
                await self._turn("send", send, streams)
            else:
                path = f"{base}/{self.reply}/regenerate"
                await self._turn("regenerate", _request("POST", path, self.headers), streams)
            if started and self.reply == started[0]:
                self.streaming.clear()
                self.idle.set()

    def _streams(self, started: list[str], reply_id: str) -> None:
        """A reply of the chain is being generated: the one to follow now."""
        started.append(reply_id)
        self.reply = reply_id
        self.idle.clear()
        self.streaming.set()

    async def follower(self) -> None:
        """Follow the chain's reply while it streams, to its end; then wait for the next."""
        while True:
            await self.streaming.wait()
            reply = self.reply
            path = f"/conversations/{self.setup.chain}/messages/{reply}/stream"
            answered = await self._turn("follow", _request("GET", path, self.headers))
            if answered and self.reply == reply:
                await self.idle.wait()  # followed to its end: wait for the next one

    async def opener(self, n: int) -> None:
        conversation = self.setup.others[n % len(self.setup.others)]
        request = _request(
            "POST", f"/conversations/{conversation}/messages", self.headers, _json({"content": MESSAGE})
        )
        while True:
            await self.streaming.wait()  # while the chain's reply streams: it keeps its model stream
            await self._turn("stream", request)

    async def uploader(self, n: int) -> None:
        while True:
            content_type, data = self.setup.images[n % len(self.setup.images)]
            kind = f"upload {content_type.split('/')[1]}"
            await self._turn(kind, _request("PUT", "/avatars/me/image", self.headers, data, content_type))
            n += 1

    def tasks(self) -> list[asyncio.Task[None]]:
        coros = [self.chain(True), *(self.chain(False) for _ in range(REGENERATE_LOOPS))]
        coros += [self.follower() for _ in range(FOLLOWERS)]
        coros += [self.opener(i) for i in range(OPENERS)]
        coros += [self.uploader(i) for i in range(UPLOADERS)]
        return [asyncio.create_task(c) for c in coros]


async def _phase(setup: Setup, phase: Phase, seconds: float, abuse: bool) -> None:
    loop = asyncio.get_running_loop()
    before = setup.meter.snapshot()
    start = loop.time()
    deadline = start + seconds
    abusers = Abuser(setup, phase.abuser).tasks() if abuse else []
    users = [asyncio.create_task(_good_user(setup.port, u, c, deadline, phase.turns)) for u, c in setup.good]
    try:
        await asyncio.sleep(seconds)
        after = setup.meter.snapshot()
        phase.seconds = loop.time() - start
    finally:
        for task in abusers:
            task.cancel()
        await asyncio.gather(*abusers, return_exceptions=True)
        await asyncio.gather(*users)  # each ends with its turn under way
    phase.cpu = {k: v - before.get(k, 0.0) for k, v in after.items()}


# ---- set-up and the run


def _images() -> list[tuple[str, bytes]]:
    """A one-colour 36-megapixel image as PNG and as baseline JPEG."""
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (200, 120, 40))
    out = []
    for fmt, content_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        out.append((content_type, buffer.getvalue()))
    return out


def _start(session: BenchSession, args: argparse.Namespace) -> Setup:
    dsn, users = users_in_database(session, GOOD_USERS + 1)
    with step(f"fake model ({CHUNKS} x {CHUNK_INTERVAL_MS} ms) and API ({args.abuse_workers} workers)"):
        model = session.start_fake_model(chunks=CHUNKS, interval_ms=CHUNK_INTERVAL_MS)
        env = {
            "LLM_PROVIDER": "openai",
            "LLM_BASE_URL": f"{model.base_url}/v1",
            "LLM_API_KEY": "bench-key",
            **limit_env(),
        }
        app = session.start_app(workers=args.abuse_workers, env=env)
    with step("avatars, conversations, the 36 MP images"):
        asyncio.run(create_avatars(app.base_url, users, concurrency=4))
        good, abuser = users[:GOOD_USERS], users[GOOD_USERS]
        conversations = asyncio.run(insert_conversations(dsn, good, "abuse bench"))
        own = [
            asyncio.run(insert_conversations(dsn, [abuser], "abuse")) for _ in range(OPENER_CONVERSATIONS + 1)
        ]
        images = _images()
    return Setup(
        dsn,
        app.port,
        list(zip(good, conversations, strict=True)),
        abuser,
        own[0][0],
        [c[0] for c in own[1:]],
        images,
        session.cpu_meter([app, model]),
    )


def _transactions(dsn: str) -> tuple[int, float]:
    return asyncio.run(write_counters(dsn))["transactions"], time.monotonic()


def _measure(setup: Setup, args: argparse.Namespace) -> tuple[list[Phase], float]:
    """Both phases; the idle background (transactions per second)."""
    with step("warm-up: a turn per user"):
        warm = Phase("warm-up")
        uvloop.run(_phase(setup, warm, 0.5, abuse=False))
        if any(t.end != "done" for t in warm.turns):
            raise RuntimeError(f"warm-up: {warm.not_done()}")
    with step(f"idle background, {args.stats_wait:g} s"):
        time.sleep(args.stats_wait)
        idle_from, idle_at = _transactions(setup.dsn)
        time.sleep(args.stats_wait)
        counted, counted_at = _transactions(setup.dsn)
        background = (counted - idle_from) / (counted_at - idle_at)
    phases = []
    for name, abuse in (("without", False), ("with", True)):
        phase = Phase(name)
        with step(f"{args.abuse_seconds:g} s {name} the abuser, then {args.stats_wait:g} s"):
            uvloop.run(_phase(setup, phase, args.abuse_seconds, abuse))
            time.sleep(args.stats_wait)
            after, at = _transactions(setup.dsn)
        idle_s = (at - counted_at) - phase.seconds
        phase.transactions = (after - counted - background * idle_s) / phase.seconds
        counted, counted_at = after, at
        phases.append(phase)
    return phases, background


def _print(args: argparse.Namespace, phases: list[Phase], background: float) -> None:
    print()
    print(
        f"{NAME}: {args.abuse_workers} workers, {GOOD_USERS} well-behaved users,"
        f" {args.abuse_seconds:g} s a phase, fake model {CHUNKS} x {CHUNK_INTERVAL_MS} ms;"
        f" limits {limit_env()}"
    )
    print(f"  idle background: {background:.1f} transactions/s (subtracted from the settling time)")
    for p in phases:
        done = p.done_s()
        print(
            f"  {p.name:<7} the abuser: {len(done)} turns done, not done {dict(p.not_done())};"
            f" to done p50 {percentile(done, 50):.3f} s p99 {percentile(done, 99):.3f} s;"
            f" {p.transactions:.1f} transactions/s; CPU % of a core: "
            + ", ".join(f"{k} {p.cpu_pct(k):.0f}" for k in sorted(p.cpu))
        )
    abused = phases[1].abuser
    print(f"  the abuser's requests ({sum(abused.values())}), by kind, status and end or code:")
    for key, n in sorted(abused.items()):
        print(f"    {n:7d}  {key}")


def _rows(without: Phase, with_: Phase) -> list[Row]:
    def turn(p: int) -> Row:
        return Row(
            NAME,
            f"good users' turn p{p} (send to done)",
            "ms",
            percentile(with_.done_s(), p) * 1000,
            percentile(without.done_s(), p) * 1000,
            goal=Goal("app/floor", "<=", 1.3),
        )

    not_done = with_.not_done() + without.not_done()
    rows = [
        turn(50),
        turn(99),
        Row(NAME, "good users' turns done", "n", len(with_.done_s()), len(without.done_s())),
        Row(
            NAME,
            "good users' turns refused or failed",
            "n",
            sum(with_.not_done().values()),
            sum(without.not_done().values()),
            goal=Goal("app", "<=", 0, ""),
            note=", ".join(f"{k} x{n}" for k, n in not_done.most_common()),
        ),
        Row(NAME, "database transactions, all", "tps", with_.transactions, without.transactions),
        Row(NAME, "database transactions, the abuser's", "tps", with_.transactions - without.transactions),
        Row(NAME, "API CPU", "% core", with_.cpu_pct("avatar-chat"), without.cpu_pct("avatar-chat")),
        Row(NAME, "Postgres CPU", "% core", with_.cpu_pct("postgres"), without.cpu_pct("postgres")),
        Row(NAME, "the abuser's requests", "n", sum(with_.abuser.values())),
    ]
    by_code = Counter[str]()
    for key, n in with_.abuser.items():
        kind, status, *what = key.split(" ")
        if kind == "upload":  # `upload png 422 image_too_many_pixels`
            kind, status, what = f"{kind} {status}", what[0], what[1:]
        by_code[f"abuser {kind}: {status} {' '.join(what)}".strip()] += n
    rows += [Row(NAME, key, "n", n) for key, n in sorted(by_code.items())]
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    raise_open_files_limit()
    with BenchSession(NAME) as session:
        setup = _start(session, args)
        phases, background = _measure(setup, args)
        logs = session.server_log_report()
    _print(args, phases, background)
    without, with_ = phases
    data = {
        "limits": limit_env(),
        "idle_transactions_per_s": background,
        "phases": {
            p.name: {
                "seconds": p.seconds,
                "turns_done_s": p.done_s(),
                "not_done": dict(p.not_done()),
                "abuser": dict(p.abuser),
                "cpu_s": p.cpu,
                "transactions_per_s": p.transactions,
            }
            for p in phases
        },
    }
    title = (
        f"{NAME} ({args.abuse_workers} workers, default limits; app: with the abuser, floor: without;"
        f" {GOOD_USERS} users, {args.abuse_seconds:g} s each)"
    )
    return conclude(NAME, title, args, _rows(without, with_), data, logs)


def main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.scenarios.{NAME}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_args(parser)
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
