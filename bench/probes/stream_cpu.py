"""In-process: the API CPU of a streamed reply's per-chunk path, without the database
(issue #17, "API CPU"), against the relay floor's same path, old code against new.

A reply is the fake model's (`bench/apps/fake_model.py`, a process of its own, its CPU not
counted) `--chunks` (20) content chunks, one every `--interval-ms` (10), read and relayed
to a client as SSE. Each variant streams `--replies` (320) replies, `--concurrency` (16)
at a time, and the figure is this process's CPU (`time.process_time()`) per reply, in ms:

    api       the API's path: `OpenAIProvider.stream` (the `openai` SDK), each chunk handed
              on with `Turn.push` as `ReplyGenerator` does (its partial saves left out:
              chat/progress, measured apart), read by the router's SSE response
              (`router._answer`: `events.turn_events` in a `StreamingResponse`) into an
              ASGI `send` that keeps the bytes, as uvicorn's would write them
    provider  `OpenAIProvider.stream` alone: each chunk's text, no Turn, no SSE
    relay     the relay floor's path (bench/apps/relay.py): httpx `aiter_lines`, `json.loads`
              per chunk, the floor's `event()` encoding, in the same `StreamingResponse`
    relay_parse  the relay floor's reading alone: httpx and `json.loads`, no SSE
    sse       the API's SSE side alone, no model: `--chunks` chunks of the fake model's
              text pushed into a Turn one loop iteration apart, read by the router's
              response as in `api` (each chunk wakes the response's task, as in the API)
    relay_sse the relay floor's SSE side alone: the same chunks, one loop iteration
              apart, encoded by the floor's `event()` in the same `StreamingResponse`
              (these two stream 4x `--replies`: they are quick)

Every reply is checked (20 `delta`s, then `done`, the text whole). Neither the server's
socket writes nor the middleware are in these figures (the same for API and floor), nor
partial saves or the database.

Old against new: `--baseline REV` also runs the same measurement on the package as it is
at git revision REV (`git archive` into a temporary folder, first on PYTHONPATH), each
code tree in a process of its own, the order alternating over `--rounds` (3); the
machine is noisy (2 shared cores), so compare the ratios printed, measured in the same
run. Prints one JSON object, and a table on stderr:

    .venv/bin/python -m bench.probes.stream_cpu [--baseline HEAD~1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("relay_parse", "provider", "relay", "api", "relay_sse", "sse")
_NO_MODEL_FACTOR = 4  # the variants without the model are quick: more replies, less noise
_SYSTEM = (
    "You are Ava, an AI avatar with a friendly personality: warm, encouraging, and attentive. "
    "Stay in character; answer in a few sentences."
)


# --- the worker: one code tree, every variant ----------------------------------------


class _Check:
    """What a client received: counts the deltas and requires a `done` at the end."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    def verify(self, body: bytes, text: str) -> None:
        deltas = body.count(b"event: delta\n")
        if deltas != self.chunks or b"event: done\n" not in body.rsplit(b"\n\n", 2)[-2]:
            raise AssertionError(f"{deltas} deltas, ends {body[-120:]!r}")
        if len(text) < self.chunks:
            raise AssertionError(f"text {text!r}")


def _scope() -> dict[str, Any]:
    # uvicorn's httptools protocol says ASGI spec 2.3: StreamingResponse also listens for
    # a disconnect in a task of its own, as it does in the API.
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "method": "POST"}


async def _receive() -> dict[str, Any]:
    await asyncio.get_running_loop().create_future()  # no disconnect: the client reads it all
    raise AssertionError("unreachable")


async def _serve(response: Any) -> bytes:
    """`response` (an ASGI app) into a list of bytes, as uvicorn would write them."""
    out: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            out.append(bytes(message["body"]))

    await response(_scope(), _receive, send)
    return b"".join(out)


class Worker:
    def __init__(self, model_url: str, chunks: int) -> None:
        from pydantic import SecretStr

        from avatar_chat.core.settings import Settings
        from avatar_chat.llm.openai_provider import OpenAIProvider

        self.check = _Check(chunks)
        settings = Settings(
            _env_file=None,
            llm_provider="openai",
            llm_base_url=model_url,
            llm_api_key=SecretStr("bench-key"),
            llm_model="gpt-4o-mini",
        )
        self.provider = OpenAIProvider(settings)
        import httpx

        # As the relay floor's client (bench/apps/relay.py).
        self.http = httpx.AsyncClient(
            base_url=model_url,
            headers={"Authorization": "Bearer bench"},
            timeout=httpx.Timeout(60, connect=5),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=1000),
        )
        self.request = self._chat_request()
        from bench.apps.fake_model import FakeModel

        self.pieces: list[str] = FakeModel(chunks, 0).pieces

    @staticmethod
    def _chat_request() -> Any:
        from avatar_chat.avatars.persona import AvatarSnapshot
        from avatar_chat.llm.base import ChatRequest, PromptMessage

        avatar = AvatarSnapshot(
            id=uuid.uuid4(), user_id=uuid.uuid4(), name="Ava", personality="friendly", backstory="", version=1
        )
        messages = (
            PromptMessage("system", _SYSTEM),
            PromptMessage("user", "Hi there!"),
            PromptMessage("assistant", "Hello! How is your day going so far?"),
            PromptMessage("user", "Tell me something nice about today, and keep it short please."),
        )
        return ChatRequest(avatar=avatar, mode="companion", messages=messages)

    def _completion(self) -> dict[str, Any]:
        messages = [{"role": m.role, "content": m.content} for m in self.request.messages]
        return {"model": "gpt-4o-mini", "messages": messages, "stream": True, "max_tokens": 1024}

    async def aclose(self) -> None:
        await self.provider.aclose()
        await self.http.aclose()

    # The variants: one reply each.

    async def provider_only(self) -> None:
        parts = [chunk async for chunk in self.provider.stream(self.request)]
        if len(parts) != self.check.chunks:
            raise AssertionError(parts)

    async def relay_parse(self) -> None:
        parts: list[str] = []
        async with self.http.stream("POST", "/chat/completions", json=self._completion()) as answer:
            answer.raise_for_status()
            async for line in answer.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices: list[dict[str, Any]] = json.loads(line[6:]).get("choices") or [{}]
                text = choices[0].get("delta", {}).get("content")
                if text:
                    parts.append(text)
        if len(parts) != self.check.chunks:
            raise AssertionError(parts)

    async def relay(self) -> None:
        from starlette.responses import StreamingResponse

        from bench.apps.floor import event

        parts: list[str] = []

        async def events() -> AsyncIterator[str]:
            yield event("user_message", {"id": "x", "content": "hi"})
            async with self.http.stream("POST", "/chat/completions", json=self._completion()) as answer:
                answer.raise_for_status()
                async for line in answer.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    choices: list[dict[str, Any]] = json.loads(line[6:]).get("choices") or [{}]
                    text = choices[0].get("delta", {}).get("content")
                    if text:
                        parts.append(text)
                        yield event("delta", {"content": text})
            yield event("done", {"id": "x", "content": "".join(parts)})

        response = StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            status_code=201,
        )
        self.check.verify(await _serve(response), "".join(parts))

    async def relay_sse(self) -> None:
        from starlette.responses import StreamingResponse

        from bench.apps.floor import event

        async def events() -> AsyncIterator[str]:
            yield event("user_message", {"id": "x", "content": "hi"})
            for piece in self.pieces:
                await asyncio.sleep(0)
                yield event("delta", {"content": piece})
            yield event("done", {"id": "x", "content": "".join(self.pieces)})

        response = StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            status_code=201,
        )
        self.check.verify(await _serve(response), "".join(self.pieces))

    async def sse(self) -> None:
        async def pieces() -> AsyncGenerator[str, None]:
            for piece in self.pieces:
                await asyncio.sleep(0)
                yield piece

        await self.api(pieces())

    async def api(self, source: AsyncGenerator[str, None] | None = None) -> None:
        from avatar_chat.chat import router
        from avatar_chat.chat.turn import Turn, TurnResult
        from avatar_chat.conversations.schemas import MessageRead
        from avatar_chat.core.errors import ServiceUnavailable

        conversation_id = uuid.uuid4()

        def message(role: str, seq: int, content: str, status: str) -> MessageRead:
            return MessageRead(
                id=uuid.uuid4(),
                conversation_id=conversation_id,
                seq=seq,
                role=role,
                content=content,
                status=status,
                persona_version=1 if role == "assistant" else None,
                personality="friendly" if role == "assistant" else None,
                created_at=datetime.now(UTC),
            )

        user_message = message("user", 1, self.request.user_message, "complete")
        placeholder = message("assistant", 2, "", "streaming")
        turn = Turn(user_message=user_message, reply=placeholder, attempt=1, streaming=True)
        parts: list[str] = []

        async def generate() -> None:  # ReplyGenerator.run and _produce, less the database
            try:
                chunks = self.provider.stream(self.request) if source is None else source
                async with contextlib.aclosing(chunks) as stream:
                    async for chunk in stream:
                        parts.append(chunk)
                        turn.push(chunk)
                saved = placeholder.model_copy(update={"content": "".join(parts), "status": "complete"})
                turn.resolve(TurnResult(reply=saved))
            finally:
                turn.close(ServiceUnavailable("interrupted", code="reply_interrupted"))

        task = asyncio.create_task(generate())
        # An SSE answer: a stream closer now (an older tree took `sse: bool`; a function is truthy).
        response = await router._answer(turn, lambda: None)
        body = await _serve(response)
        await task
        self.check.verify(body, "".join(parts))


async def _replies(reply: Callable[[], Awaitable[None]], replies: int, concurrency: int) -> float:
    """CPU seconds of this process for `replies` replies, `concurrency` at a time."""
    pending = iter(range(replies))

    async def lane() -> None:
        for _ in pending:
            await reply()

    started = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(lane())
    return time.process_time() - started


async def _work(args: argparse.Namespace) -> dict[str, Any]:
    worker = Worker(args.model_url, args.chunks)
    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "relay_parse": worker.relay_parse,
        "provider": worker.provider_only,
        "relay": worker.relay,
        "api": worker.api,
        "relay_sse": worker.relay_sse,
        "sse": worker.sse,
    }
    try:
        for reply in variants.values():  # warm up: connections, imports, caches
            await _replies(reply, args.concurrency * 2, args.concurrency)
        ms: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            order = list(variants.items())
            for name, reply in order if repeat % 2 == 0 else reversed(order):
                replies = args.replies * _NO_MODEL_FACTOR if name.endswith("sse") else args.replies
                cpu = await _replies(reply, replies, args.concurrency)
                ms[name].append(cpu / replies * 1000)
    finally:
        await worker.aclose()
    return {"ms_per_reply": {name: min(values) for name, values in ms.items()}}


# --- the orchestrator: the fake model, one worker process per code tree and round ------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_model(chunks: int, interval_ms: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    pace = ["--chunks", str(chunks), "--interval-ms", str(interval_ms)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.apps.fake_model", "--port", str(port), *pace], cwd=ROOT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the fake model did not start")


def _export(rev: str, into: Path) -> Path:
    """The package as it is at `rev`, in `into`; the folder to put first on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", rev, "backend/avatar_chat"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "backend"


def _run_worker(args: argparse.Namespace, model_url: str, pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    argv = [sys.executable, "-m", "bench.probes.stream_cpu", "--worker", "--model-url", model_url]
    for option in ("chunks", "replies", "concurrency", "repeats"):
        argv += [f"--{option}", str(getattr(args, option))]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _git(*argv: str) -> str:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    model, model_url = _start_model(args.chunks, args.interval_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="stream_cpu-") as tmp:
            trees: dict[str, Path | None] = {"new": None}
            if args.baseline:
                trees = {"old": _export(args.baseline, Path(tmp)), **trees}
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                order = list(trees.items())
                for name, path in order if round_ % 2 == 0 else reversed(order):
                    print(f"... round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                    runs[name].append(_run_worker(args, model_url, path)["ms_per_reply"])
    finally:
        model.terminate()
        model.wait(10)
    medians = {
        tree: {v: round(statistics.median(r[v] for r in rounds), 3) for v in VARIANTS}
        for tree, rounds in runs.items()
    }
    result: dict[str, Any] = {
        "ms_per_reply": medians,
        "api_over_relay": {t: round(m["api"] / m["relay"], 3) for t, m in medians.items()},
        "rounds": runs,
        "code": {
            "new": _git("rev-parse", "--short", "HEAD") + (" +dirty" if _git("status", "--short") else "")
        },
        "settings": {
            k: getattr(args, k) for k in ("chunks", "interval_ms", "replies", "concurrency", "rounds")
        },
    }
    if args.baseline:
        result["code"]["old"] = _git("rev-parse", "--short", args.baseline)
        result["new_over_old"] = {v: round(medians["new"][v] / medians["old"][v], 3) for v in VARIANTS}
    _table(result)
    return result


def _table(result: dict[str, Any]) -> None:
    trees = list(result["ms_per_reply"])
    print(f"\nCPU ms per reply ({result['settings']['chunks']} chunks), median of rounds:", file=sys.stderr)
    print("  variant      " + "".join(f"{t:>10}" for t in trees), file=sys.stderr)
    for v in VARIANTS:
        cells = "".join(f"{result['ms_per_reply'][t][v]:10.3f}" for t in trees)
        ratio = f"   new/old {result['new_over_old'][v]:.3f}" if "new_over_old" in result else ""
        print(f"  {v:<12} {cells}{ratio}", file=sys.stderr)
    print("  api/relay    " + "".join(f"{result['api_over_relay'][t]:10.3f}" for t in trees), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.probes.stream_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", help="also measure the package at this git revision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--interval-ms", type=int, default=10)
    parser.add_argument("--replies", type=int, default=320, help="replies per variant and repeat")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="per worker; the best counts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import uvloop

        print(json.dumps(uvloop.run(_work(args))))
    else:
        print(json.dumps(_orchestrate(args)))


if __name__ == "__main__":
    main()
