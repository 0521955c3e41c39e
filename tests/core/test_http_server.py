"""The cap on a request's head (MAX_HEADER_BYTES), on real `avatar-chat serve` processes
with two workers: refused with a 431 in the one error shape before the rest is read."""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.assertions import assert_error
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.slow

KIB = 1024
MIB = 1024 * KIB
DEFAULT_LIMIT = 32 * KIB


def _serve(database_url: str, **env: str) -> ServerProcess:
    return ServerProcess(database_url=database_url, workers=2, env=env)


@pytest.fixture(scope="module")
async def server(database_url: str) -> AsyncIterator[ServerProcess]:
    """MAX_HEADER_BYTES at its default."""
    async with _serve(database_url) as proc:
        yield proc


@dataclass
class Sent:
    written: int  # bytes the client managed to write
    answer: bytes  # what came back before the connection ended
    reset: bool  # the server reset the connection on the client's writes or read


def _send_head(port: int, prefix: bytes, fill: int, *, chunk: int = 64 * KIB) -> Sent:
    """`prefix`, then `fill` bytes of header value in chunks, then the end of the head, as a
    client streaming a huge header does; stops writing once a 431 arrives, then reads to
    the end of the connection (the requests sent say `Connection: close`)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    # A small send buffer: what the client wrote is close to what the server took.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * KIB)
    written, answer, reset = 0, b"", False
    with sock:
        try:
            sock.sendall(prefix)
            written = len(prefix)
            left = fill
            while left > 0:
                if select.select([sock], [], [], 0)[0]:
                    data = sock.recv(64 * KIB)
                    answer += data
                    if not data or b"HTTP/1.1 431 " in answer:
                        break  # answered before the head was complete
                    continue
                part = min(chunk, left)
                sock.sendall(b"a" * part)
                written += part
                left -= part
            else:
                sock.sendall(b"\r\n\r\n")
                written += 4
        except (BrokenPipeError, ConnectionResetError):
            reset = True
        try:
            while data := sock.recv(64 * KIB):
                answer += data
        except ConnectionResetError:
            reset = True
    return Sent(written, answer, reset)


def _last_answer(answer: bytes) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the last response in `answer`."""
    head, _, body = answer[answer.rindex(b"HTTP/1.1 ") :].partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _get(path: str, *headers: tuple[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _exchange(port: int, requests: list[bytes]) -> list[int]:
    """The requests one after another on one keep-alive connection: each answer's status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    try:
        for request in requests:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            assert length is not None, head
            await reader.readexactly(int(length.group(1)))
            statuses.append(int(head.split(b" ", 2)[1]))
    finally:
        writer.close()
    return statuses


def _peak_rss(pid: int) -> int:
    """The most memory the process has held so far (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * KIB
    raise AssertionError("no VmHWM")


async def test_an_8_mib_authorization_header_is_refused_before_it_is_read(server: ServerProcess) -> None:
    """(a) The answer comes while the client is still writing, and the connection is closed
    on the rest; (d) no worker's memory grows by anything like what was sent."""
    before = {pid: _peak_rss(pid) for pid in server.worker_pids()}
    prefix = b"GET /avatars/me HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer "
    sends = await asyncio.gather(
        *(asyncio.to_thread(_send_head, server.port, prefix, 8 * MIB) for _ in range(4))
    )
    for sent in sends:
        status, body = _last_answer(sent.answer)
        assert status == 431, sent.answer[:300]
        assert body["error"]["code"] == "headers_too_large"
        assert b"\r\nconnection: close\r\n" in sent.answer
        # The server read about the limit and one read; the rest was never sent.
        assert sent.written < 1 * MIB, sent.written
    grown = sum(_peak_rss(pid) - before[pid] for pid in before)
    assert grown < 4 * MIB, f"the workers' peak memory grew by {grown} bytes for 4 x 8 MiB sent"


async def test_a_head_just_under_the_limit_is_served(server: ServerProcess) -> None:
    """(b) 30 KiB of headers reach the app: /health answers, and the token check answers
    for itself."""
    padding = ("X-Padding", "p" * (30 * KIB))
    async with server.client() as client:
        for _ in range(4):  # new connections: both workers
            assert (await client.get("/health", headers=[padding])).status_code == 200
            token = await client.get("/avatars/me", headers={"Authorization": "Bearer " + "t" * 30 * KIB})
            assert_error(token, 401, "token_too_large")


async def test_many_small_headers_over_the_limit_are_refused(server: ServerProcess) -> None:
    """(c) The count is of the whole head, not of one header; a client that writes the
    whole request before reading (httpx) reads the 431, not a reset."""
    headers = [(f"X-Small-{i}", "s" * 400) for i in range(100)]  # ~42 KiB, none over 1 KiB
    async with server.client() as client:
        for _ in range(4):
            response = await client.get("/health", headers=headers)
            assert_error(response, 431, "headers_too_large")
            assert response.headers["connection"] == "close"
            assert str(DEFAULT_LIMIT) in response.json()["error"]["message"]


async def test_the_count_is_per_request_and_bodies_do_not_count(server: ServerProcess) -> None:
    """Keep-alive: heads of 20 KiB one after another on one connection are each under the
    limit, and the next one over it is refused. A body larger than the limit that arrives
    with its head (one read larger than the limit) is not counted as head."""
    small = _get("/health", ("X-Padding", "p" * (20 * KIB)))
    large = _get("/health", ("X-Padding", "p" * (40 * KIB)))
    assert await _exchange(server.port, [small] * 5 + [large]) == [200] * 5 + [431]
    body = b"x" * (48 * KIB)
    post = (
        b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    assert await _exchange(server.port, [post, small]) == [405, 200]


async def test_a_pipelined_huge_head_is_refused_too(server: ServerProcess) -> None:
    """A request sent right behind another, in the same packets: its head's count starts
    within a read, so it may pass the limit by up to one read, never by megabytes."""
    prefix = _get("/health") + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: "
    sent = await asyncio.to_thread(_send_head, server.port, prefix, 8 * MIB)
    assert sent.answer.startswith(b"HTTP/1.1 200 "), sent.answer[:300]
    status, body = _last_answer(sent.answer)
    assert (status, body["error"]["code"]) == (431, "headers_too_large")
    assert sent.written < 2 * MIB, sent.written


async def test_max_header_bytes_reaches_every_worker(database_url: str) -> None:
    """A limit under the protocol's own default: each worker applies the setting."""
    async with _serve(database_url, MAX_HEADER_BYTES="8192") as proc, proc.client() as client:
        for _ in range(8):  # new connections, spread over the two workers
            under = await client.get("/health", headers={"X-Padding": "p" * (6 * KIB)})
            assert under.status_code == 200
            over = await client.get("/health", headers={"X-Padding": "p" * (10 * KIB)})
            assert_error(over, 431, "headers_too_large")
            assert "8192" in over.json()["error"]["message"]
