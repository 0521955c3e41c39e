"""Supabase Storage through the `supabase` client (storage3), with the service-role key:
it bypasses Storage's RLS, so this API decides who gets what (a user's own folder only)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from storage3.exceptions import StorageApiError
from supabase import AsyncClient

from avatar_chat.storage.base import ObjectMissing, check_path, storage_unavailable

log = logging.getLogger(__name__)

# Objects are never rewritten (a new image gets new names): clients may cache them for good.
_CACHE_CONTROL = "31536000"
# Storage lists one level at a time, at most this many entries per call.
_PAGE = 1000
# Storage removes at most this many objects per request.
_REMOVE_BATCH = 1000
_MAX_DEPTH = 4


class SupabaseObjectStore:
    def __init__(self, client: AsyncClient, bucket: str) -> None:
        self.bucket = bucket
        self._client = client

    def _files(self) -> Any:
        return self._client.storage.from_(self.bucket)

    async def upload(self, path: str, data: bytes, content_type: str) -> None:
        options: dict[str, str] = {
            "content-type": content_type,
            "cache-control": _CACHE_CONTROL,
            "upsert": "false",
        }
        async with _failures("upload", path):
            await self._files().upload(check_path(path), data, options)

    async def download(self, path: str) -> bytes:
        try:
            async with _failures("download", path):
                data: bytes = await self._files().download(check_path(path))
        except Exception as exc:
            if _not_found(exc.__cause__):
                raise ObjectMissing() from exc
            raise
        return data

    async def remove(self, paths: Sequence[str]) -> None:
        checked = [check_path(p) for p in paths]
        for start in range(0, len(checked), _REMOVE_BATCH):
            batch = checked[start : start + _REMOVE_BATCH]
            async with _failures("remove", batch[0]):
                await self._files().remove(batch)

    async def list_folder(self, folder: str) -> list[str]:
        found: list[str] = []
        pending = [(check_path(folder), 0)]
        while pending:
            prefix, depth = pending.pop()
            offset = 0
            while True:
                async with _failures("list", prefix):
                    entries = await self._files().list(prefix, {"limit": _PAGE, "offset": offset})
                for entry in entries:
                    path = f"{prefix}/{entry['name']}"
                    if entry.get("id") is not None:
                        found.append(path)
                    elif depth < _MAX_DEPTH:  # a folder: Storage gives it no id
                        pending.append((path, depth + 1))
                if len(entries) < _PAGE:
                    break
                offset += _PAGE
        return sorted(found)

    async def signed_urls(self, paths: Sequence[str], *, expires_in_s: int, base_url: str) -> list[str]:
        async with _failures("sign", paths[0] if paths else ""):
            signed = await self._files().create_signed_urls([check_path(p) for p in paths], expires_in_s)
        urls = []
        for item in signed:
            if item.get("error") or not item.get("signedURL"):
                # Storage signs only objects that exist: this one is gone (a permanent state).
                log.error("storage could not sign %s: %s", item.get("path"), item.get("error"))
                raise ObjectMissing()
            urls.append(str(item["signedURL"]))
        return urls


def _not_found(exc: BaseException | None) -> bool:
    """Storage's answer for an object that is not there (404, or 400 with a not_found code)."""
    if not isinstance(exc, StorageApiError):
        return False
    return str(exc.status) == "404" or str(exc.code).lower() in {"not_found", "nosuchkey", "404"}


@asynccontextmanager
async def _failures(action: str, path: str) -> AsyncIterator[None]:
    """Storage failures as 503 storage_unavailable, logged with what Storage said."""
    try:
        yield
    except StorageApiError as exc:
        log.error("storage %s %s failed: %s %s %s", action, path, exc.status, exc.code, exc.message)
        raise storage_unavailable() from exc
    except httpx.HTTPError as exc:
        log.warning("storage %s %s failed: %s", action, path, exc)
        raise storage_unavailable() from exc
