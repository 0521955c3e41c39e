"""The request body cap: 413 before anything reads a body that is too large."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar_chat.core.errors import send_error

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _TooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """413 for bodies over `max_bytes`: by Content-Length up front, or while a chunked
    body is being read (so a lying or absent header cannot get past it).

    Not FastAPI's `max_body_size`: its 413 for a declared Content-Length is plain text,
    and every error here must have the one JSON shape."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: dict[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # (method, path) -> its own cap: an upload route takes more than a JSON body.
        self.overrides = dict(overrides or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)  # no route here reads a body for other methods
            return
        max_bytes = self.overrides.get((scope["method"], scope["path"]), self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > max_bytes
                except ValueError:
                    too_large = False  # the server rejects a malformed header itself
                if too_large:
                    await _reject(send, max_bytes)
                    return
                # The server delivers no more than Content-Length bytes: nothing to count.
                await self.app(scope, receive, send)
                return
        received = 0
        exceeded = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework may turn our exception into its own error response (FastAPI
            # answers 400 for any failure while reading the body): answer 413 instead.
            nonlocal replaced
            if exceeded:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await _reject(send, max_bytes)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await _reject(send, max_bytes)


async def _reject(send: Send, max_bytes: int) -> None:
    await send_error(send, 413, "payload_too_large", f"The request body is larger than {max_bytes} bytes.")
