"""The HTTP/1.1 protocol `avatar-chat serve` runs: uvicorn's httptools protocol with a cap
on the request head (request line + headers), which uvicorn's own does not have.

Without it, an 8 MiB `Authorization` header is buffered whole (by httptools, which only
hands a header over once it is complete) before the app can refuse it. Here the bytes read
while a request's head is incomplete are counted as they arrive; one byte over
MAX_HEADER_BYTES and the server answers `431 Request Header Fields Too Large` in the API's
error shape and closes, without handing more to the parser. This is the hot path: the
count is one integer add per read while a head is open, nothing per header or per body
chunk, and the base class is called directly (no `super()` object per read).

The cap travels in uvicorn's `Config.h11_max_incomplete_event_size`: the same bound (the
largest incomplete request head) for uvicorn's h11 protocol, and a field every worker
process receives with its pickled Config.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from avatar_chat.core.errors import error_payload
from avatar_chat.core.logs import REQUEST_ID

log = logging.getLogger(__name__)

# When the Config carries no limit (Settings.max_header_bytes is the one `serve` passes).
DEFAULT_MAX_HEADER_BYTES: Final = 32 * 1024
# After a 431: bytes still read (and dropped), for this long at most, so that a client a
# little over the limit reads the answer instead of a reset; past either, the connection is
# closed on whatever the client is still sending.
LINGER_BYTES: Final = 64 * 1024
LINGER_S: Final = 1.0

HEADERS_TOO_LARGE: Final = "headers_too_large"
_IN_BODY: Final = -1  # _head while a body is read: nothing to count
_REFUSED: Final = -2  # _head once the 431 is sent: reads are dropped


class HeaderLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over `max_header_bytes`
    (`config.h11_max_incomplete_event_size`) with a 431 before reading the rest of it."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit = config.h11_max_incomplete_event_size
        self.max_header_bytes = DEFAULT_MAX_HEADER_BYTES if limit is None else limit
        # Bytes read of the current request's head; or _IN_BODY, or _REFUSED.
        self._head = 0
        # After a 431: bytes read and dropped; the answer, while it waits for another.
        self._dropped = 0
        self._refusal: bytes | None = None

    def data_received(self, data: bytes) -> None:
        head = self._head
        if head < 0:
            if head == _IN_BODY:
                HttpToolsProtocol.data_received(self, data)
            else:
                self._drop(len(data))
            return
        room = self.max_header_bytes - head
        if len(data) <= room:
            self._head = head + len(data)  # reset by the parser's callbacks if the head ends
            HttpToolsProtocol.data_received(self, data)
            return
        # Only as much as the limit allows goes to the parser: if the head is still open
        # after that, it is larger than the limit.
        self._head = self.max_header_bytes
        HttpToolsProtocol.data_received(self, data[:room])
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # a 400 from the parser, or an upgrade took the connection over
        if self._head == self.max_header_bytes:
            self._refuse(head + len(data))
        else:
            self.data_received(data[room:])

    # Parser callbacks: where a head ends and where the next one begins.
    def on_headers_complete(self) -> None:
        self._head = _IN_BODY
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        # A next request on this connection starts its own count. (If it begins within the
        # read that ended this one, that read's share of it goes uncounted: a head can
        # reach the limit plus one read, never more.)
        self._head = 0
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        if self._refusal is not None and self.cycle.response_complete and not self.pipeline:
            refusal, self._refusal = self._refusal, None
            self._answer(refusal)

    def _refuse(self, seen: int) -> None:
        self._head = _REFUSED
        self.parser = None  # type: ignore[assignment]  # what it buffered goes now
        # An id as core.observability makes them (not imported here: that would load
        # prometheus_client in `serve` before its multiprocess folder is set).
        request_id = os.urandom(16).hex()
        token = REQUEST_ID.set(request_id)
        try:
            log.warning(
                "431 headers_too_large: request head over MAX_HEADER_BYTES (%d; %d bytes read) from %s",
                self.max_header_bytes,
                seen,
                self.client[0] if self.client else "?",
            )
            message = (
                "The request line and headers are larger than this server accepts"
                f" ({self.max_header_bytes} bytes)."
            )
            body = json.dumps(error_payload(HEADERS_TOO_LARGE, message)).encode()
        finally:
            REQUEST_ID.reset(token)
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"x-request-id: " + request_id.encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        refusal = b"".join(content)
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            # Behind a request still being answered (pipelining): the 431 follows its
            # answer (on_response_complete); nothing more is read until then.
            self._refusal = refusal
            self.flow.pause_reading()
        else:
            self._answer(refusal)

    def _answer(self, refusal: bytes) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(refusal)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is all there is; reads go on briefly
            self.flow.resume_reading()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def _drop(self, n: int) -> None:
        if self._refusal is not None:
            self.flow.pause_reading()  # the app read its body and resumed reading
            return
        self._dropped += n
        if self._dropped > LINGER_BYTES:
            self.transport.close()
