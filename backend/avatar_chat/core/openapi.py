"""What an answer says in the OpenAPI schema beyond its body: the headers it carries and the
links from it to the operations it feeds (OpenAPI 3.1, 4.8.20). A client generator and a
stateful fuzzer read the links to chain create -> read -> update -> delete without guessing
which field of which answer goes where."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
