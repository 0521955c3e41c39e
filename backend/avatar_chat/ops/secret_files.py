"""Secrets made once per machine and kept in a file (mode 0600) that every worker reads."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Final

# HS256 wants a key of at least its hash's size (RFC 7518, 3.2).
MIN_SECRET_BYTES: Final = 32


class WeakSecretFile(RuntimeError):
    """A secret file holds too little to sign with: refused rather than used."""


def read_or_create(
    path: Path, make: Callable[[], bytes], *, min_bytes: int = MIN_SECRET_BYTES
) -> tuple[bytes, bool]:
    """The secret in `path`, made with `make()` if there is none yet; and whether this
    call made it. Workers may race here: the secret is written to a file of this process
    first (created exclusively, never through a link, flushed to disk) and then linked
    into place, and link() never overwrites, so exactly one secret wins and every process
    reads that one, complete (never an empty or partial file, also after a crash). A file
    holding fewer than `min_bytes` (empty, truncated, written by hand) is refused."""
    try:
        return check_secret(path, path.read_bytes(), min_bytes), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = make()
    check_secret(path, secret, min_bytes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            made = True
        except FileExistsError:
            made = False
    finally:
        tmp.unlink(missing_ok=True)
    if made:
        _fsync_directory(path.parent)
    return check_secret(path, path.read_bytes(), min_bytes), made


def check_secret(path: Path, secret: bytes, min_bytes: int = MIN_SECRET_BYTES) -> bytes:
    if len(secret) < min_bytes:
        raise WeakSecretFile(
            f"{path} holds {len(secret)} bytes, fewer than the {min_bytes} a secret needs: "
            "remove the file and a new secret is made at the next start (tokens or signed URLs "
            "made with the old one stop working)"
        )
    return secret


def _fsync_directory(directory: Path) -> None:
    """The new link survives a crash too (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
