"""A fake OpenAI-compatible model for benchmarks: every streamed reply is `--chunks`
content chunks, one every `--interval-ms`, as a model paces its tokens.

Lean on purpose, so that 1000 streams at once cost it little (it runs in a process of its
own, whose CPU no figure counts): plain asyncio on uvloop, HTTP/1.1 with keep-alive read
and written by hand, each chunk a pre-encoded template. It speaks just enough of the
protocol for the `openai` SDK and httpx (tests/fakes/openai_server.py is the faithful fake
the tests use):

    POST .../chat/completions  `"stream": true`: `data: {chat.completion.chunk}` events (a
                               role chunk at once, the content chunks at the pace, a
                               finish chunk, `data: [DONE]`; no usage chunk, whatever
                               `stream_options` asks);
                               otherwise one `chat.completion` with the whole text at once
    GET  /health               200

    python -m bench.apps.fake_model --port P [--chunks 20] [--interval-ms 500] [--text-file F]

A reply's chunks are the words of a short built-in text (or of `--text-file`'s), cycled,
each with a space after it, as a model's tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path

import uvloop

# Words of a reply, a few characters each, as a model's tokens.
_REPLY = (
    "Sure, here is a short and friendly answer about today: the sky is clear, the coffee"
    " is warm, and there is time for a walk before lunch. Enjoy it!"
)
_WORDS = _REPLY.split(" ")
_CHUNK = (
    '{"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,"model":"%(model)s",'
    '"system_fingerprint":"fp_bench","choices":[{"index":0,"delta":%(delta)s,"logprobs":null,'
    '"finish_reason":%(finish)s}]}'
)


class FakeModel:
    def __init__(self, chunks: int, interval_s: float, words: list[str] | None = None) -> None:
        words = words or _WORDS
        self.pieces = [words[i % len(words)] + " " for i in range(chunks)]
        self.interval_s = interval_s

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                method, path, length = _request_head(head)
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and path.endswith("/chat/completions"):
                    await self._completion(writer, json.loads(body))
                elif path == "/health":
                    _answer(writer, 200, b'{"status":"ok"}')
                else:
                    _answer(writer, 404, b'{"error":{"message":"not found","type":"invalid_request_error"}}')
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _completion(self, writer: asyncio.StreamWriter, request: dict[str, object]) -> None:
        fields = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time())}
        fields["model"] = str(request.get("model", "fake-model")).replace('"', "")
        if request.get("stream") is not True:
            _answer(writer, 200, _whole(fields, "".join(self.pieces)))
            return

        def event(delta: str, finish: str = "null") -> None:
            data = _CHUNK % {**fields, "delta": delta, "finish": finish}
            _chunk(writer, f"data: {data}\n\n".encode())

        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        event('{"role":"assistant","content":""}')
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, piece in enumerate(self.pieces, 1):
            await writer.drain()
            await asyncio.sleep(max(0.0, start + n * self.interval_s - loop.time()))
            if writer.is_closing():  # the client went away
                return
            event(json.dumps({"content": piece}))
        event("{}", '"stop"')
        _chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")


def _request_head(head: bytes) -> tuple[str, str, int]:
    """Method, path and Content-Length of a request's head."""
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    length = 0
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return method, path, length


def _answer(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    reason = {200: "OK", 404: "Not Found"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _whole(fields: dict[str, object], text: str) -> bytes:
    return json.dumps(
        {
            **fields,
            "object": "chat.completion",
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        }
    ).encode()


async def _main(args: argparse.Namespace) -> None:
    words = args.text_file.read_text().split(" ") if args.text_file else None
    model = FakeModel(args.chunks, args.interval_ms / 1000, words)
    server = await asyncio.start_server(model.serve, args.host, args.port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed reply (20)")
    parser.add_argument("--interval-ms", type=int, default=500, help="pause before each chunk (500)")
    parser.add_argument(
        "--text-file", type=Path, default=None, help="the words of a reply (cycled) come from this file"
    )
    uvloop.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
