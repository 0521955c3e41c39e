"""A fake OpenAI-compatible chat-completions server, real HTTP on 127.0.0.1.

Real sockets rather than a mocked transport, so that connection refusals, dropped
connections, slow first tokens and stalls reach the SDK exactly as they would in
production. Each request picks a scenario from a `[[fake:<scenario>]]` marker in its last
user message, else the server-wide `default_scenario`; `fail_next(n, status)` puts n
failing answers in front of whatever comes next (to exercise the SDK's retries).

Scenarios: ok, slow, status_429, status_500, status_401, first_token_delay (headers,
then silence), hang (silence before any header), stall (2 chunks, then silence), break
(2 chunks, then the connection is dropped), malformed (1 chunk, then invalid JSON),
no_choices (1 chunk, then one without `choices`), stream_error (1 chunk, then an error
object), empty (only [DONE]). `fail_times:<n>[:<status>]` fails the first n requests carrying the
same last user message, then answers ok: `fail_next` for when the test cannot reach the
server object (a separate process); give every such message a unique text.

In-process: `async with FakeOpenAIServer() as server: ...` (or `start()` ... `stop()`).
As a process: `python -m tests.fakes.openai_server --port P [--default SCENARIO]`, then
steer it over HTTP: POST /_fake/default {"scenario"}, POST /_fake/fail_next {"n",
"status"}, GET /_fake/requests, POST /_fake/reset, GET /health.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SCENARIOS = frozenset(
    {
        "ok",
        "slow",
        "status_429",
        "status_500",
        "status_401",
        "first_token_delay",
        "hang",
        "stall",
        "break",
        "malformed",
        "no_choices",
        "stream_error",
        "empty",
    }
)
_MARKER = re.compile(r"\[\[fake:([^\]]*)\]\]")
_FAIL_TIMES = re.compile(r"fail_times:(\d+)(?::(\d{3}))?")
_REPLY_PREFIX = "Hello from fake LLM: "
_BAD_SECOND_EVENTS = {
    "malformed": "data: {not json\n\n",
    "no_choices": 'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":0,"model":"m"}\n\n',
    # How vLLM, OpenRouter and others report a failure once the stream has begun.
    "stream_error": 'data: {"error":{"message":"model crashed","type":"server_error","code":500}}\n\n',
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


class _DropConnection(Exception):
    """Raised mid-body on purpose: uvicorn then closes the socket without ending the body."""


class _QuietDrops(logging.Filter):
    """Keeps the intentional `break` scenario out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _DropConnection):
            return False
        return not (isinstance(exc, BaseExceptionGroup) and exc.subgroup(_DropConnection) is not None)


_QUIET_DROPS = _QuietDrops()


def reply_text(user_message: str) -> str:
    """What the `ok` scenario answers to `user_message` (its marker removed)."""
    return _REPLY_PREFIX + _MARKER.sub("", user_message).strip()


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        default_scenario: str = "ok",
        host: str = "127.0.0.1",
        port: int = 0,
        retry_after_ms: int | None = 10,
        slow_delay_s: float = 0.2,
        long_delay_s: float = 10.0,
    ) -> None:
        _check_scenario(default_scenario)
        self.default_scenario = default_scenario
        # Sent as `retry-after-ms` with 429/5xx answers, which the SDK honours in place of
        # its ~0.5 s+ backoff: retry tests stay fast. None restores the SDK's own backoff.
        self.retry_after_ms = retry_after_ms
        self.slow_delay_s = slow_delay_s
        self.long_delay_s = long_delay_s
        self.requests: list[dict[str, Any]] = []
        # Ends every reply with " #<n>" (the request's number): tells regenerations apart.
        self.number_replies = False
        # When set, every reply is this text instead of the echo (what a model might say
        # that its user did not: the moderation of replies).
        self.reply: str | None = None
        # When set, the scenario of every request that is not streamed (the summaries).
        self.complete_scenario: str | None = None
        self.request_headers: list[dict[str, str]] = []
        # Streams still being written: lets a test see that a client hung up promptly.
        self.open_streams = 0
        self._host = host
        self._port = port
        self._fail_queue: deque[int] = deque()
        self._fail_times_seen: Counter[str] = Counter()
        self._stopping = asyncio.Event()
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/_fake/default", self._control_default, methods=["POST"]),
                Route("/_fake/fail_next", self._control_fail_next, methods=["POST"]),
                Route("/_fake/requests", self._control_requests, methods=["GET"]),
                Route("/_fake/reset", self._control_reset, methods=["POST"]),
            ]
        )

    # --- control ---------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer `status` to the next `n` chat requests, whatever their scenario."""
        self._fail_queue.extend([status] * n)

    def reset(self) -> None:
        self.default_scenario = "ok"
        self.number_replies = False
        self.reply = None
        self.complete_scenario = None
        self.requests.clear()
        self.request_headers.clear()
        self._fail_queue.clear()
        self._fail_times_seen.clear()

    # --- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None or not self._server.started:
            raise RuntimeError("the fake server is not running")
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("already started")
        self._stopping = asyncio.Event()
        logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)
        config = uvicorn.Config(
            self.app,
            host=self._host,
            port=self._port,
            lifespan="off",
            log_level="warning",
            # Leave the host process's logging alone (pytest captures via the root logger).
            log_config=None,
            access_log=False,
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(), name="fake-openai-server")
        async with asyncio.timeout(10):
            while not server.started:
                if self._task.done():
                    self._task.result()  # surfaces why it could not start
                    raise RuntimeError("the fake server exited during start-up")
                await asyncio.sleep(0.01)

    async def __aenter__(self) -> FakeOpenAIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._stopping.set()  # wakes every handler that is pretending to be slow
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        finally:
            self._server = None
            self._task = None

    @staticmethod
    def refused_url() -> str:
        """A base URL on a port where nothing listens (free a moment ago)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    # --- the API ---------------------------------------------------------------------

    async def _chat_completions(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property")
        self.requests.append(body)
        self.request_headers.append(dict(request.headers))

        user_message = _last_user_message(body["messages"])
        if self._fail_queue:
            return self._status(self._fail_queue.popleft(), request)
        marker = _MARKER.search(user_message)
        scenario = marker.group(1) if marker else self.default_scenario
        if self.complete_scenario is not None and body.get("stream") is not True:
            scenario = self.complete_scenario
        fail_times = _FAIL_TIMES.fullmatch(scenario)
        if fail_times:
            self._fail_times_seen[user_message] += 1
            if self._fail_times_seen[user_message] <= int(fail_times.group(1)):
                return self._status(int(fail_times.group(2) or 500), request)
            scenario = "ok"
        if scenario not in SCENARIOS:
            return _error(400, f"unknown fake scenario {scenario!r}")
        if scenario.startswith("status_"):
            return self._status(int(scenario.removeprefix("status_")), request)
        if scenario == "hang" and await self._sleep(self.long_delay_s):
            return _error(503, "shutting down")

        model = str(body.get("model", "fake-model"))
        text = self.reply if self.reply is not None else reply_text(user_message)
        if self.number_replies:
            text += f" #{len(self.requests)}"
        pieces = re.findall(r"\S+\s*", text)
        finish_reason = "stop"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and 0 < max_tokens < len(pieces):
            pieces, finish_reason = pieces[:max_tokens], "length"

        if body.get("stream") is not True:
            return self._complete(scenario, model, pieces, finish_reason)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        chunks = _Chunks(model, include_usage, prompt_chars=sum(len(str(m)) for m in body["messages"]))
        return StreamingResponse(
            self._events(scenario, chunks, pieces, finish_reason),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def _events(
        self, scenario: str, chunks: _Chunks, pieces: list[str], finish_reason: str
    ) -> AsyncIterator[str]:
        self.open_streams += 1
        try:
            if scenario == "empty":
                yield "data: [DONE]\n\n"
                return
            if scenario == "first_token_delay" and await self._sleep(self.long_delay_s):
                return
            yield chunks.sse(chunks.first())
            for n, piece in enumerate(pieces):
                if n == 1 and scenario in _BAD_SECOND_EVENTS:
                    yield _BAD_SECOND_EVENTS[scenario]
                    return
                if n == 2:
                    if scenario == "stall" and await self._sleep(self.long_delay_s):
                        return
                    if scenario == "break":
                        raise _DropConnection
                if scenario == "slow" and n > 0 and await self._sleep(self.slow_delay_s):
                    return
                yield chunks.sse(chunks.content(piece))
            yield chunks.sse(chunks.finish(finish_reason))
            if chunks.include_usage:
                yield chunks.sse(chunks.usage(len(pieces)))
            yield "data: [DONE]\n\n"
        finally:
            self.open_streams -= 1

    def _complete(self, scenario: str, model: str, pieces: list[str], finish_reason: str) -> Response:
        if scenario == "malformed":
            return Response("{not json", media_type="application/json")
        if scenario == "break":
            raise _DropConnection
        content = "" if scenario == "empty" else "".join(pieces)
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": _usage(1, len(pieces)),
            }
        )

    def _status(self, status: int, request: Request) -> Response:
        headers = {}
        if self.retry_after_ms is not None and (status == 429 or status >= 500):
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if status == 401:
            # Like OpenAI, quote the key back, so tests can check it is never passed on.
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")
        if status == 429:
            return _error(429, "Rate limit reached for requests.", headers=headers)
        return _error(status, "The server had an error while processing your request.", headers=headers)

    async def _sleep(self, seconds: float) -> bool:
        """Pretend to be slow; True when the server is stopping and the handler should give up."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}]}
        )

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # --- control over HTTP, for a server in another process --------------------------

    async def _control_default(self, request: Request) -> Response:
        scenario = (await request.json()).get("scenario")
        if scenario not in SCENARIOS:
            return _error(400, f"unknown fake scenario {scenario!r}")
        self.default_scenario = scenario
        return JSONResponse({"default_scenario": scenario})

    async def _control_fail_next(self, request: Request) -> Response:
        body = await request.json()
        self.fail_next(int(body.get("n", 1)), int(body.get("status", 500)))
        return JSONResponse({"queued": len(self._fail_queue)})

    async def _control_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # In-process the host (pytest) owns SIGINT/SIGTERM; uvicorn must not take them over.
        yield


class _Chunks:
    """chat.completion.chunk objects, field for field as OpenAI streams them."""

    def __init__(self, model: str, include_usage: bool, *, prompt_chars: int) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.prompt_tokens = max(1, prompt_chars // 4)

    def first(self) -> dict[str, Any]:
        return self._chunk([self._choice({"role": "assistant", "content": "", "refusal": None}, None)])

    def content(self, text: str) -> dict[str, Any]:
        return self._chunk([self._choice({"content": text}, None)])

    def finish(self, finish_reason: str) -> dict[str, Any]:
        return self._chunk([self._choice({}, finish_reason)])

    def usage(self, completion_tokens: int) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = _usage(self.prompt_tokens, completion_tokens)
        return chunk

    @staticmethod
    def sse(chunk: dict[str, Any]) -> str:
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    @staticmethod
    def _choice(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _error(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _last_user_message(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts
                return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {sorted(SCENARIOS)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--default", default="ok", choices=sorted(SCENARIOS), dest="default_scenario")
    parser.add_argument("--retry-after-ms", type=int, default=10, help="negative: send none")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    fake = FakeOpenAIServer(
        default_scenario=args.default_scenario,
        retry_after_ms=args.retry_after_ms if args.retry_after_ms >= 0 else None,
    )
    config = uvicorn.Config(
        fake.app,
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level=args.log_level,
        access_log=False,
        http="h11",
        ws="none",
        timeout_graceful_shutdown=2,
    )
    logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)  # after Config set logging up
    # A plain uvicorn.Server: as a process of its own it should handle SIGINT/SIGTERM.
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
