"""The outermost layer of the app: request ids, the access log, request metrics, /metrics.

Pure ASGI, around everything else (Starlette's error middleware included, see
`ObservedFastAPI`), so that every answer, a 500 or a 413 from the body limit too, carries
`X-Request-ID` and is counted. Per request it costs a few microseconds: an id (the
client's `X-Request-ID` if it is sane, else 128 random bits in hex), a context variable
that every log line and error body reads, one response header, and one histogram
observation labelled by the route template (never the raw path).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar_chat.core.errors import send_error
from avatar_chat.core.logs import REQUEST_ID
from avatar_chat.core.metrics import CONTENT_TYPE, UNMATCHED_ROUTE, Metrics
from avatar_chat.core.settings import Environment, Settings

access_log = logging.getLogger("avatar_chat.access")

_HEADER = b"x-request-id"
# Accepted from a client (or a proxy) as is: up to 128 characters a log line or a header
# can hold without escaping. Anything else is replaced by a new id.
_SANE_ID = re.compile(rb"[A-Za-z0-9._~:+/=@-]{1,128}")
METRICS_PATH: Final = "/metrics"


def new_request_id() -> str:
    return os.urandom(16).hex()


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    for name, value in headers:
        if name == _HEADER:
            if _SANE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics, settings: Settings) -> None:
        self.app = app
        self.metrics = metrics
        self._count = metrics.enabled
        self._serve_metrics = metrics.enabled and serves_metrics_on_api_port(settings)
        self._token = metrics_authorization(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        id_header = (_HEADER, request_id.encode("ascii"))
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # if nothing answered

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers")
                if isinstance(headers, list):
                    headers.append(id_header)
                else:
                    message["headers"] = [*(headers or ()), id_header]
            await send(message)

        try:
            if self._serve_metrics and scope["path"] == METRICS_PATH:
                scope["route"] = _MetricsRoute
                await self._metrics_endpoint(scope, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except BaseException:
            # Left set: the server logs this exception next, in this task.
            self._record(scope, status, started)
            raise
        self._record(scope, status, started)
        REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        template: str = getattr(route, "path", UNMATCHED_ROUTE) if route is not None else UNMATCHED_ROUTE
        if self._count:
            self.metrics.http_request(scope["method"], template, status).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            # The path without its query string: signed URLs carry tokens there.
            access_log.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )

    async def _metrics_endpoint(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            allow = [(b"allow", b"GET, HEAD")]
            await send_error(send, 405, "method_not_allowed", "Method Not Allowed", allow)
            return
        if self._token is not None and not _authorized(scope["headers"], self._token):
            await send_error(
                send,
                401,
                "unauthorized",
                "Send Authorization: Bearer <METRICS_TOKEN>.",
                [(b"www-authenticate", b'Bearer realm="metrics"')],
            )
            return
        body = self.metrics.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class _MetricsRoute:
    """What `scope["route"]` holds for /metrics (served here, not by a router route)."""

    path = METRICS_PATH


def serves_metrics_on_api_port(settings: Settings) -> bool:
    """Whether GET /metrics is answered on the API's port. Not with METRICS_PORT (`avatar-chat
    serve` serves it there, cli.py); and in production only behind METRICS_TOKEN: counts of
    routes, errors and users' activity are not for whoever can reach the API."""
    if settings.metrics_port is not None:
        return False
    return settings.app_env is Environment.development or settings.metrics_token is not None


def metrics_authorization(settings: Settings) -> bytes | None:
    """The Authorization header /metrics requires (METRICS_TOKEN), None when it is open."""
    token = settings.metrics_token
    return None if token is None else b"Bearer " + token.get_secret_value().encode()


def _authorized(headers: list[tuple[bytes, bytes]], expected: bytes) -> bool:
    for name, value in headers:
        if name == b"authorization":
            return hmac.compare_digest(value, expected)
    return False


class ObservedFastAPI(FastAPI):
    """FastAPI with `RequestObserver` outside Starlette's ServerErrorMiddleware, which
    `add_middleware` cannot reach: a 500 for an unhandled error is answered by that
    middleware, and must carry the request id and be counted as well."""

    def __init__(self, *, observe: Callable[[ASGIApp], ASGIApp], **options: Any) -> None:
        self._observe = observe
        super().__init__(**options)

    def build_middleware_stack(self) -> ASGIApp:
        return self._observe(super().build_middleware_stack())
