"""The one small interface every object store implements, and its errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from avatar_chat.core.errors import BadRequest, NotFound, ServiceUnavailable

# Object names this API writes and serves: folders and files of letters, digits, . _ -
# (never `.` or `..`), as `<user_id>/<id>/<size>.webp`.
_SEGMENT_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
_SEGMENT = re.compile(_SEGMENT_PATTERN)
_MAX_SEGMENTS = 8
# The same, as the OpenAPI `pattern` of an object path: what check_path accepts, exactly.
OBJECT_PATH_PATTERN = f"^{_SEGMENT_PATTERN}(/{_SEGMENT_PATTERN}){{0,{_MAX_SEGMENTS - 1}}}$"


def check_path(path: str) -> str:
    """`path` if every segment is a plain name (no traversal, no empty segments)."""
    parts = path.split("/")
    if len(parts) > _MAX_SEGMENTS or not all(_SEGMENT.fullmatch(p) and p not in {".", ".."} for p in parts):
        raise BadRequest("Not an object path this API serves.", code="invalid_object_path")
    return path


class ObjectMissing(NotFound):
    """A stored object the database still points at is not in the store any more."""

    code = "image_not_found"
    message = "The image's files are gone from storage; upload it again."


def storage_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Storage is unavailable; retry shortly.", code="storage_unavailable")


class ObjectStore(Protocol):
    """A bucket of objects. Writes never overwrite (a new image gets new names); removing
    what is not there is not an error. Failures raise ServiceUnavailable (storage_unavailable)."""

    bucket: str

    async def upload(self, path: str, data: bytes, content_type: str) -> None: ...

    async def download(self, path: str) -> bytes:
        """The object's bytes; ObjectMissing when it is not in the store."""
        ...

    async def remove(self, paths: Sequence[str]) -> None:
        """Every one of them (in as many requests as the backend takes); missing ones are fine."""
        ...

    async def list_folder(self, folder: str) -> list[str]:
        """The path of every object under `folder`, at any depth."""
        ...

    async def signed_urls(self, paths: Sequence[str], *, expires_in_s: int, base_url: str) -> list[str]:
        """URLs anyone holding them may GET for `expires_in_s`; `base_url` is this API's own
        (where a local store serves them)."""
        ...
