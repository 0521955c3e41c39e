"""Blocking one-connection HTTP clients for the sequential scenarios: one request at a
time with as little client work as possible, timed from the first byte written."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from http.client import HTTPConnection


class SequentialClient:
    """One keep-alive HTTP/1.1 connection with as little client overhead as possible
    (stdlib http.client), for measuring one request at a time. Blocking by design: it
    is only used from a benchmark's synchronous main, never inside an event loop."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn = HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, float]:
        """(status, body, seconds) of one request, from writing it to having read the body."""
        all_headers = {"Content-Type": "application/json"} if body is not None else {}
        all_headers.update(headers or {})
        start = time.perf_counter()
        try:
            self._conn.request(method, path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        except (ConnectionError, OSError):
            # The server closed a kept-alive connection; retry once on a fresh one.
            self._conn.close()
            self._conn = HTTPConnection("127.0.0.1", self._port, timeout=60)
            start = time.perf_counter()
            self._conn.request(method, path, body=body, headers=all_headers)
            response = self._conn.getresponse()
            data = response.read()
        return response.status, data, time.perf_counter() - start

    def close(self) -> None:
        self._conn.close()


@dataclass(frozen=True)
class StreamTiming:
    status: int
    first_byte_s: float  # the status line's first byte
    marker_s: float | None  # the end of the first body chunk that holds the marker
    total_s: float  # the end of the body
    body: bytes


class StreamingClient:
    """One keep-alive HTTP/1.1 connection on a raw socket that times a streamed answer as
    it arrives: first byte, first chunk holding a marker (e.g. `event: delta`), end.
    Blocking, like SequentialClient, and with as little client work per byte."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf.clear()
        return sock

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], marker: bytes
    ) -> StreamTiming:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        payload = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n{head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            return self._exchange(payload, marker)
        except (ConnectionError, EOFError):
            # The server closed a kept-alive connection; retry once on a fresh one.
            self.close()
            return self._exchange(payload, marker)

    def _exchange(self, payload: bytes, marker: bytes) -> StreamTiming:
        if self._sock is None:
            self._sock = self._connect()
        sock = self._sock
        start = time.perf_counter()
        sock.sendall(payload)
        first_byte = self._fill(sock) - start
        while b"\r\n\r\n" not in self._buf:
            self._fill(sock)
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        body = bytearray()
        marker_at: float | None = None
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                while b"\r\n" not in self._buf:
                    self._fill(sock)
                size_line, _, rest = bytes(self._buf).partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    self._fill(sock)
                    rest = bytes(self._buf).partition(b"\r\n")[2]
                chunk, rest = rest[:size], rest[size + 2 :]
                self._buf[:] = rest
                if size == 0:
                    break  # no trailers: uvicorn sends none
                body += chunk
                if marker_at is None and marker in body[-(len(chunk) + len(marker)) :]:
                    marker_at = time.perf_counter() - start
        else:
            length = int(fields.get("content-length", "0"))
            while len(self._buf) < length:
                self._fill(sock)
            body += self._buf[:length]
            del self._buf[:length]
            if marker in body:
                marker_at = time.perf_counter() - start
        total = time.perf_counter() - start
        if fields.get("connection", "").lower() == "close":
            self.close()
        return StreamTiming(status, first_byte, marker_at, total, bytes(body))

    def _fill(self, sock: socket.socket) -> float:
        data = sock.recv(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self._buf += data
        return time.perf_counter()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()
