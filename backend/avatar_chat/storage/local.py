"""The embedded default: objects as files under DATA_DIR/storage/<bucket>/, served by this
API at Supabase Storage's URL shape (/storage/v1/object/sign/<bucket>/<path>?token=...),
with signed-URL tokens as Supabase makes them (HS256 JWT, claim `url` = <bucket>/<path>).

Files live on one machine's disk, shared by its workers: scaling out to several machines
needs Supabase Storage (set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import jwt

from avatar_chat.core.errors import BadRequest
from avatar_chat.ops.secret_files import read_or_create
from avatar_chat.storage.base import ObjectMissing, check_path, storage_unavailable

_KEY_FILE = ".signing-key"


def _signing_key(root: Path) -> bytes:
    """This machine's key for signed URLs, made once (any worker may be first)."""
    key, _ = read_or_create(root / _KEY_FILE, lambda: secrets.token_bytes(32))
    return key


class LocalObjectStore:
    def __init__(self, root: Path, bucket: str, signing_key: bytes) -> None:
        self.bucket = bucket
        self._root = root
        self._bucket_dir = root / check_path(bucket)
        self._key = signing_key

    @classmethod
    async def open(cls, root: Path, bucket: str) -> LocalObjectStore:
        await asyncio.to_thread(_private_folder, root)
        return cls(root, bucket, await asyncio.to_thread(_signing_key, root))

    def file_of(self, path: str) -> Path:
        return self._bucket_dir / check_path(path)

    async def upload(self, path: str, data: bytes, content_type: str) -> None:
        target = self.file_of(path)
        try:
            await asyncio.to_thread(_write_atomically, target, data, self._root)
        except OSError as exc:
            raise storage_unavailable() from exc

    async def download(self, path: str) -> bytes:
        target = self.file_of(path)
        try:
            return await asyncio.to_thread(target.read_bytes)
        except FileNotFoundError:
            raise ObjectMissing() from None
        except OSError as exc:
            raise storage_unavailable() from exc

    async def remove(self, paths: Sequence[str]) -> None:
        files = [self.file_of(p) for p in paths]
        try:
            await asyncio.to_thread(_remove, files, self._bucket_dir)
        except OSError as exc:
            raise storage_unavailable() from exc

    async def list_folder(self, folder: str) -> list[str]:
        top = self.file_of(folder)
        try:
            return await asyncio.to_thread(_walk, top, self._bucket_dir)
        except OSError as exc:
            raise storage_unavailable() from exc

    async def signed_urls(self, paths: Sequence[str], *, expires_in_s: int, base_url: str) -> list[str]:
        now = int(time.time())
        urls = []
        for path in paths:
            url = f"{self.bucket}/{check_path(path)}"
            token = jwt.encode({"url": url, "iat": now, "exp": now + expires_in_s}, self._key, "HS256")
            urls.append(f"{base_url.rstrip('/')}/storage/v1/object/sign/{url}?token={token}")
        return urls

    def verify(self, bucket: str, path: str, token: str) -> tuple[Path, int]:
        """The file a signed URL names and when the URL expires, if its token is valid for
        exactly that object."""
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], options={"require": ["exp", "url"]})
        except jwt.ExpiredSignatureError:
            raise BadRequest("This signed URL has expired.", code="signature_expired") from None
        except jwt.InvalidTokenError:
            raise BadRequest("This signed URL's token is not valid.", code="invalid_signature") from None
        if claims.get("url") != f"{bucket}/{path}" or bucket != self.bucket:
            raise BadRequest("This signed URL's token is for another object.", code="invalid_signature")
        return self.file_of(path), int(claims["exp"])


# Users' images are private: served only through signed URLs, never readable by other
# accounts on the machine.
_FILE_MODE = 0o600
_FOLDER_MODE = 0o700


def _private_folder(root: Path) -> None:
    """The store's root, created private, and made private if it was not (older versions
    created it with the umask's mode): nothing below it is reachable by others then."""
    root.mkdir(mode=_FOLDER_MODE, parents=True, exist_ok=True)
    if root.stat().st_mode & 0o077:
        root.chmod(_FOLDER_MODE)


def _make_folders(folder: Path, root: Path) -> None:
    """`folder` and any missing folder between it and `root`, each private."""
    missing = []
    while folder != root and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another worker made it just now
            each.mkdir(mode=_FOLDER_MODE)


def _write_atomically(target: Path, data: bytes, root: Path) -> None:
    _make_folders(target.parent, root)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(temporary, flags, _FILE_MODE), "wb") as fh:
            fh.write(data)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _remove(files: list[Path], stop_at: Path) -> None:
    for file in files:
        file.unlink(missing_ok=True)
        parent = file.parent
        while parent != stop_at and parent.is_relative_to(stop_at):
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent


def _walk(top: Path, bucket_dir: Path) -> list[str]:
    if not top.is_dir():
        return []
    found = []
    for directory, _, names in os.walk(top):
        for name in names:
            if not name.startswith("."):
                found.append((Path(directory) / name).relative_to(bucket_dir).as_posix())
    return sorted(found)
