"""The one error shape, asserted."""

from __future__ import annotations

import httpx

# What Postgres appends to an error's text; a message written for people never has it.
_DATABASE_INTERNALS = ("DETAIL:", "HINT:", "CONTEXT:", "SQLSTATE", "PL/pgSQL", "\n")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The one error shape, with this status and code, a message written for people, and
    the answer's request id (also in its X-Request-ID header)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert not any(internal in message for internal in _DATABASE_INTERNALS), message
    assert body["error"]["request_id"] == response.headers["x-request-id"], response.headers
