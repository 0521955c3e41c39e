"""Small HTTP helpers shared by routers: entity tags."""

from __future__ import annotations

import re

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
