"""Small HTTP helpers shared by routers: entity tags, headers read by hot routes, page
parameters, host names."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from fastapi import Query, Request

from avatar_chat.core.errors import ValidationFailed

_ETAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(header: str | None) -> list[int] | None:
    """The versions an `If-Match` header accepts; None means no precondition.

    `*` matches any existing resource. Weak tags never match (RFC 9110 strong
    comparison), and a tag that is not one of our versions matches nothing, so a
    garbled header fails the precondition instead of being ignored.
    """
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        return None
    versions: list[int] = []
    pos = 0
    while pos < len(header):
        match = _ETAG.match(header, pos)
        if match is None:
            return []
        weak, value = match.groups()
        if weak is None and value.isdigit() and len(value) <= 18:
            versions.append(int(value))
        pos = match.end()
    return versions


def page_limit(maximum: int) -> Any:
    """The `limit` query parameter of a paginated listing: a page size from 1 to `maximum`."""
    return Query(ge=1, le=maximum, description=f"Page size, 1-{maximum}.")


def page_cursor(*, max_length: int, pattern: str, min_length: int = 1) -> Any:
    """The `cursor` query parameter of a cursor-paginated listing (its answer's `next_cursor`).
    Its length is checked here (422); its `pattern`, which the listing's decoder matches
    exactly, by the decoder (400 invalid_cursor), so the schema says what the decoder takes."""

    def in_the_string_schema(schema: dict[str, Any]) -> None:
        # An optional parameter's schema is anyOf string or null: say it of the string.
        for option in schema.get("anyOf", [schema]):
            if option.get("type") == "string":
                option.update(pattern=pattern, minLength=min_length)

    return Query(
        max_length=max_length,
        description="next_cursor of the previous page",
        json_schema_extra=in_the_string_schema,
    )


def header_parameter(
    name: str, *, description: str, max_length: int, min_length: int = 0, pattern: str | None = None
) -> dict[str, Any]:
    """The OpenAPI description of a header a hot route reads itself (`read_header`)."""
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    if pattern is not None:
        schema["pattern"] = pattern
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def read_header(request: Request, name: str, *, max_length: int, min_length: int = 0) -> str | None:
    """An optional header, checked as FastAPI checks a `Header()` parameter (422 with the
    same details). Hot routes read headers this way: a `Header()` parameter costs FastAPI
    about as much per request as the rest of the route's parameters together."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not min_length <= len(value) <= max_length:
        too_long = len(value) > max_length
        raise ValidationFailed(
            "The request is not valid.",
            details=[
                {
                    "loc": ["header", name.lower()],
                    "type": "string_too_long" if too_long else "string_too_short",
                    "msg": f"String should have at {'most' if too_long else 'least'}"
                    f" {max_length if too_long else min_length} characters",
                }
            ],
        )
    return value


def host_name(host_header: str | None) -> str | None:
    """The name in a `Host` header, lower case, without its port or an IPv6 literal's
    brackets; None when there is none or it is not shaped like a host."""
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        port = host[end + 1 :] if end >= 0 else ""
        if end < 0 or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        return host[1:end] or None
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name or None


def is_rebinding_safe(name: str) -> bool:
    """Whether no DNS answer decides where `name` leads (so no DNS rebinding through it): an
    IP literal, or `localhost` and its subdomains, which browsers resolve to loopback themselves."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
