"""What an answer says in the OpenAPI schema beyond its body: the headers it carries and the
links from it to the operations it feeds (OpenAPI 3.1, 4.8.20). A client generator and a
stateful fuzzer read the links to chain create -> read -> update -> delete without guessing
which field of which answer goes where."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from avatar_chat.core.errors import COMMON_CODES, ERROR_CODES, MESSAGES

# The avatar's version as an entity tag (`"7"`), for If-Match.
ETAG = "$response.header.ETag"
ETAG_HEADER: Mapping[str, Any] = {
    "ETag": {
        "description": "The avatar's version, quoted: send it as `If-Match` to change this version only.",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}
LOCATION_HEADER: Mapping[str, Any] = {
    "Location": {"description": "Where the created resource is read.", "schema": {"type": "string"}}
}


def body(pointer: str) -> str:
    """A runtime expression for a field of the answer's JSON body (`/id`, `/user_message/id`)."""
    return f"$response.body#{pointer}"


def links(**targets: Mapping[str, str]) -> dict[str, Any]:
    """A response's `links`: for each target operationId, its parameters (`path.x`, `header.X`)
    from this answer; named after the target in PascalCase."""
    out: dict[str, Any] = {}
    for operation_id, parameters in targets.items():
        link: dict[str, Any] = {"operationId": operation_id}
        if parameters:
            link["parameters"] = dict(parameters)
        out[operation_id[0].upper() + operation_id[1:]] = link
    return out


def answer(
    description: str | None = None, *, headers: Mapping[str, Any] | None = None, **targets: Mapping[str, str]
) -> dict[str, Any]:
    """A successful response's extra OpenAPI: its description, headers and links."""
    out: dict[str, Any] = {}
    if description:
        out["description"] = description
    if headers:
        out["headers"] = dict(headers)
    if targets:
        out["links"] = links(**targets)
    return out


_NAMED = re.compile(r"`([a-z_]+)`")


def describe_error_codes(schema: dict[str, Any]) -> None:
    """Each error response of each operation says the codes it may carry: what any route may
    answer with that status (COMMON_CODES) and the codes of that status its description
    names, else the status' own; in its description and, for a generator, as
    `x-error-codes`."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            named = [c for c in _NAMED.findall(operation.get("description", "")) if c in ERROR_CODES]
            for key, response in operation["responses"].items():
                status = int(key)
                if status < 400:
                    continue
                own = [c for c in dict.fromkeys(named) if ERROR_CODES[c] == status]
                codes = list(dict.fromkeys([*COMMON_CODES.get(status, ()), *own]))
                if not codes:
                    codes = [next(c for c, s in ERROR_CODES.items() if s == status)]
                base = response.get("description") or MESSAGES.get(status, "")
                response["description"] = f"{base} Codes: {', '.join(f'`{c}`' for c in codes)}."
                response["x-error-codes"] = codes
