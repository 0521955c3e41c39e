"""Database errors turned into client errors, in one place.

Our SQL functions and triggers speak one protocol: an error the client can act on is
raised with SQLSTATE `AC<HTTP status>`, the human message as MESSAGE, the stable
machine-readable code as HINT and, when there is more to say, a JSON object as DETAIL.
DETAIL keys with a meaning here: `retry_after` (seconds, sent as `Retry-After`) and
`etag` (sent as `ETag`). Every other failure is mapped by its standard SQLSTATE class.
Nothing Postgres prints (DETAIL, HINT, CONTEXT lines) ever reaches a client.

| SQLSTATE | HINT (code)              | raised by (functions in avatar_chat)                           |
|----------|--------------------------|----------------------------------------------------------------|
| AC401    | user_not_found           | act_as, begin_my_image_upload, begin_my_card_image (the        |
|          |                          | token's user is gone)                                          |
| AC404    | conversation_not_found   | begin_turn, begin_regenerate, delete_message, choose_reply     |
| AC404    | avatar_version_not_found | restore_my_avatar                                              |
| AC404    | message_not_found        | begin_regenerate, delete_message, request_stop, reply_progress,|
|          |                          | choose_reply                                                   |
| AC409    | avatar_required          | begin_turn, begin_regenerate                                   |
| AC409    | not_latest               | begin_regenerate (not the current reply, or not the latest     |
|          |                          | exchange)                                                      |
| AC409    | reply_in_progress        | begin_regenerate, delete_message, choose_reply (a reply is     |
|          |                          | being generated)                                               |
| AC412    | precondition_failed      | update_my_avatar, restore_my_avatar, set_my_avatar_image,      |
|          |                          | begin_my_image_upload, begin_my_card_image,                    |
|          |                          | write_my_avatar_card (DETAIL etag)                             |
| AC422    | idempotency_key_reused   | begin_turn, begin_regenerate                                   |
| AC422    | not_editable             | begin_regenerate (regenerating a user message, editing a reply)|
| AC422    | card_invalid             | the avatars_check_card trigger (a card that is not an object)  |
| AC422    | card_too_large           | the avatars_check_card trigger (over 2 MiB as JSON text)       |
| AC429    | rate_limited             | the messages_enforce_limits trigger (DETAIL retry_after)       |
| AC429    | too_many_streams         | the messages_enforce_limits trigger (DETAIL retry_after)       |
| AC429    | quota_exceeded           | the messages_enforce_limits trigger (DETAIL retry_after, plan, |
|          |                          | limit, allowed, used, resets_at)                               |
| AC429    | export_in_progress       | begin_export (DETAIL retry_after)                              |
| AC429    | export_limited           | begin_export (DETAIL retry_after, allowed)                     |
| AC422    | archive_invalid          | import_conversation (DETAIL file, problem)                     |
| AC429    | image_rate_limited       | count_image_upload, through begin_my_image_upload and          |
|          |                          | begin_my_card_image (DETAIL retry_after)                       |

begin_regenerate serves both regenerate and edit. tests/core/test_error_codes.py keeps this
table and the codes raised in supabase/schemas/*.sql the same set.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import asyncpg

from avatar_chat.core.errors import (
    AppError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)

log = logging.getLogger(__name__)

# Errors that mean "the database is not reachable right now", as opposed to "this
# statement is wrong": the client should retry, and /ready reports them.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,  # statement_timeout: overloaded or locked out
    asyncpg.InternalClientError,  # a connection left mid-operation by a timeout or a drop
)

_APP_SQLSTATE = re.compile(r"^AC(\d{3})$")
_BY_STATUS: dict[int, type[AppError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PreconditionFailed,
        ValidationFailed,
        TooManyRequests,
    )
}
_DETAIL_HEADERS = {"retry_after": "Retry-After", "etag": "ETag"}


def _from_protocol(status: int, exc: asyncpg.PostgresError) -> AppError:
    headers: dict[str, str] = {}
    details: dict[str, Any] = {}
    raw_detail = getattr(exc, "detail", None)
    if raw_detail:
        try:
            parsed = json.loads(raw_detail)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for key, value in parsed.items():
                if key in _DETAIL_HEADERS:
                    headers[_DETAIL_HEADERS[key]] = str(value)
                else:
                    details[key] = value
        else:
            log.error("%s raised with a DETAIL that is not a JSON object", exc.sqlstate)
    code = getattr(exc, "hint", None) or None
    # `message` is MESSAGE alone; str(exc) would add DETAIL and HINT lines.
    message: str = getattr(exc, "message", None) or AppError.message
    cls = _BY_STATUS.get(status, AppError)
    error = cls(message, code=code, headers=headers, details=details or None)
    if cls is AppError:
        error.status_code = status
    return error


def translate(exc: BaseException) -> AppError | None:
    """The client-facing error for a database failure, or None when it is our bug."""
    if isinstance(exc, asyncpg.PostgresError) and (match := _APP_SQLSTATE.match(exc.sqlstate or "")):
        return _from_protocol(int(match[1]), exc)
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        if (exc.constraint_name or "").endswith("user_id_fkey"):
            # A valid token whose auth.users row went after act_as checked it (a deletion
            # committed meanwhile): the same answer act_as gives.
            return Unauthorized("The user of this token no longer exists.", code="user_not_found")
        return Conflict("A referenced row does not exist.", code="reference_missing")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict("That already exists.", code="already_exists")
    if isinstance(exc, asyncpg.CheckViolationError | asyncpg.NotNullViolationError):
        return ValidationFailed(
            "A value is out of range.",
            code="constraint_violation",
            details={"constraint": exc.constraint_name},
        )
    if isinstance(exc, asyncpg.DataError):
        return ValidationFailed("A value has the wrong form.", code="invalid_value")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return Forbidden("Not allowed.", code="forbidden")
    if isinstance(exc, UNAVAILABLE):
        return ServiceUnavailable("The database is unavailable; retry shortly.", code="database_unavailable")
    return None


def raise_translated(exc: BaseException) -> NoReturn:
    """Raise what a database failure means for the client, its `AppError`, from it; or
    the failure itself when it is our bug. Called while handling `exc`."""
    translated = translate(exc)
    if translated is None:
        raise exc
    if isinstance(translated, ServiceUnavailable):
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    raise translated from exc


@contextmanager
def translate_errors() -> Iterator[None]:
    """Database failures raised inside leave as `AppError`s (or unchanged: our bugs)."""
    try:
        yield
    except AppError:
        raise
    except (asyncpg.PostgresError, *UNAVAILABLE) as exc:
        raise_translated(exc)
