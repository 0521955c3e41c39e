"""One error hierarchy, rendered by one handler as {"error": {"code", "message"}}."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount, Route
from starlette.types import Send

from avatar_chat.core.logs import REQUEST_ID

log = logging.getLogger(__name__)


# What each status means in this API: the default message of the AppError answering it,
# and the status's description wherever a route lists it in `responses=`.
MESSAGES: dict[int, str] = {
    400: "The request is malformed.",
    401: "A valid Supabase access token is required.",
    403: "Not allowed.",
    404: "Not found.",
    409: "The request conflicts with the current state.",
    412: "The resource changed since you read it (If-Match does not match).",
    413: "The request body is larger than MAX_BODY_BYTES (65536 bytes unless configured).",
    415: "The body is not of a type this route takes.",
    422: "The request is not valid.",
    429: "Too many requests; retry later.",
    500: "Something went wrong on our side.",
    502: "The language model provider failed.",
    503: "Temporarily unavailable; retry shortly.",
    504: "The language model provider did not answer in time.",
}


class AppError(Exception):
    """An error the client can act on: HTTP status, stable code, human message.

    A kind of error names its status and code where it is declared,
    `class NotFound(AppError, status=404, code="not_found")`; its message is MESSAGES[status]
    unless it sets its own."""

    status_code = 500
    code = "internal_error"
    message = MESSAGES[500]

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status_code = status
            cls.message = MESSAGES[status]
        if code is not None:
            cls.code = code

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: Any = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.headers = {**self.standard_headers(), **(headers or {})}
        self.details = details
        super().__init__(self.message)

    def standard_headers(self) -> dict[str, str]:
        """The headers every answer of this kind carries (those given are added over them)."""
        return {}


class BadRequest(AppError, status=400, code="bad_request"): ...


class Unauthorized(AppError, status=401, code="unauthorized"):
    def standard_headers(self) -> dict[str, str]:
        # RFC 6750: say which scheme and why.
        error = "invalid_request" if self.code == "missing_token" else "invalid_token"
        return {"WWW-Authenticate": f'Bearer realm="avatar-chat", error="{error}"'}


class Forbidden(AppError, status=403, code="forbidden"): ...


class NotFound(AppError, status=404, code="not_found"): ...


class Conflict(AppError, status=409, code="conflict"): ...


class PreconditionFailed(AppError, status=412, code="precondition_failed"): ...


class PayloadTooLarge(AppError, status=413, code="payload_too_large"): ...


class UnsupportedMediaType(AppError, status=415, code="unsupported_media_type"): ...


class ValidationFailed(AppError, status=422, code="validation_failed"): ...


class TooManyRequests(AppError, status=429, code="rate_limited"): ...


class ProviderError(AppError, status=502, code="provider_error"): ...


class ServiceUnavailable(AppError, status=503, code="service_unavailable"):
    def __init__(
        self, message: str | None = None, *, code: str | None = None, retry_after_s: int = 1
    ) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class DatabaseBusy(ServiceUnavailable, code="database_busy"):
    """Every pooled connection stayed busy past DB_ACQUIRE_TIMEOUT_S (or too many requests
    already wait for one): the database is up, this worker's share of it is not free."""


class ProviderTimeout(AppError, status=504, code="provider_timeout"): ...


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    # The answer's X-Request-ID, to quote when reporting a problem (it is in the logs too).
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The shape of every 4xx and 5xx answer."""

    error: ErrorBody


# What every authenticated route can answer, and what any route reading a JSON body adds
# (the body may not parse, e.g. not UTF-8, or be over MAX_BODY_BYTES).
AUTHENTICATED_ERRORS: tuple[type[AppError], ...] = (
    Unauthorized,
    Forbidden,
    ValidationFailed,
    ServiceUnavailable,
)
BODY_ERRORS: tuple[type[AppError], ...] = (BadRequest, PayloadTooLarge)


def _by_status(codes: dict[int, tuple[str, ...]]) -> dict[str, int]:
    return {code: status for status, names in codes.items() for code in names}


# Every code an error answer may carry, by its status: the schema lists, for each error
# response of each operation, the codes it may carry (core/openapi.py), and a test checks
# that every code the code raises, in Python or in SQL (db_errors.py), is here.
ERROR_CODES: dict[str, int] = _by_status(
    {
        400: (
            "bad_request",
            "invalid_cursor",
            "invalid_event_id",
            "invalid_object_path",
            "invalid_signature",
            "signature_expired",
        ),
        401: ("missing_token", "unauthorized", "user_not_found"),
        403: ("forbidden", "host_not_allowed"),
        404: (
            "not_found",
            "avatar_not_found",
            "avatar_version_not_found",
            "conversation_not_found",
            "message_not_found",
            "image_not_found",
            "object_not_found",
        ),
        405: ("method_not_allowed",),
        406: ("not_acceptable",),
        409: (
            "conflict",
            "already_exists",
            "avatar_exists",
            "avatar_required",
            "not_latest",
            "reference_missing",
            "reply_in_progress",
            "reply_superseded",
            "send_in_progress",
        ),
        411: ("length_required",),
        412: ("precondition_failed",),
        413: ("payload_too_large",),
        415: ("unsupported_media_type", "unsupported_image_type", "unsupported_card_type"),
        422: (
            "validation_failed",
            "invalid_value",
            "constraint_violation",
            "idempotency_key_reused",
            "message_blocked",
            "not_editable",
            "image_undecodable",
            "image_too_many_pixels",
            "card_malformed",
            "card_unsupported_spec",
            "card_invalid",
            "card_backstory_too_long",
            "card_not_found",
            "card_undecodable",
            "card_too_large",
            "archive_invalid",
            "archive_unsafe",
            "archive_version_unsupported",
        ),
        429: (
            "rate_limited",
            "too_many_streams",
            "quota_exceeded",
            "image_rate_limited",
            "export_in_progress",
            "export_limited",
        ),
        500: ("internal_error",),
        502: ("provider_error",),
        503: (
            "service_unavailable",
            "database_unavailable",
            "database_busy",
            "shutting_down",
            "auth_unavailable",
            "jwks_unavailable",
            "storage_unavailable",
            "moderation_unavailable",
            "busy",
            "reply_interrupted",
            "schema_outdated",
        ),
        504: ("provider_timeout",),
    }
)
# What any authenticated route may answer, whatever it does (its own codes are named in its
# description).
COMMON_CODES: dict[int, tuple[str, ...]] = {
    401: ("missing_token", "unauthorized", "user_not_found"),
    403: ("forbidden",),
    422: ("validation_failed",),
    503: (
        "database_unavailable",
        "database_busy",
        "shutting_down",
        "auth_unavailable",
        "jwks_unavailable",
        "service_unavailable",
    ),
}


def error_payload(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The one error shape; with the id of the request being answered, if any."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    request_id = REQUEST_ID.get()
    if request_id is not None:
        body["request_id"] = request_id
    return {"error": body}


async def send_error(
    send: Send, status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """The one error shape, answered from raw ASGI middleware (outside FastAPI's handlers)."""
    body = json.dumps(error_payload(code, message)).encode()
    start: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the errors it can answer, all in the one shape."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        out[err.status_code] = {"model": ErrorResponse, "description": err.message}
    return out


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


# The order methods are listed in an Allow header.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str | None:
    """The Allow header of a 405 (RFC 9110 15.5.6): every method the request's path supports.

    Routes are added one per method (several for one path), and Starlette answers a 405 from
    the first route whose path matches, naming only that route's method; so the methods of
    every route matching the path are gathered here. The static client files (a Mount) take
    GET and HEAD. None if nothing matches (the route's own header is kept then)."""
    path = get_route_path(request.scope)
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(path):
            methods |= route.methods
        elif isinstance(route, Mount) and request.scope.get("route") is route:
            methods |= {"GET", "HEAD"}
    if not methods:
        return None
    ordered = [m for m in _METHOD_ORDER if m in methods] + sorted(methods.difference(_METHOD_ORDER))
    return ", ".join(ordered)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        details.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "type": err.get("type"),
                "msg": err.get("msg"),
            }
        )
    return details


def install_error_handlers(app: FastAPI) -> None:
    async def on_app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        if exc.status_code >= 500:
            log.warning("%d %s: %s", exc.status_code, exc.code, exc.message)
        return JSONResponse(
            error_payload(exc.code, exc.message, exc.details),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse(
            error_payload("validation_failed", "The request is not valid.", _validation_details(exc)),
            status_code=422,
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allow = allowed_methods(request)
            if allow is not None:
                headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
                headers["Allow"] = allow
        return JSONResponse(
            error_payload(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_payload(AppError.code, AppError.message), status_code=500)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
