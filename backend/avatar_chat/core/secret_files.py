"""Secrets made once per machine and kept in a file (mode 0600) that every worker reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], bytes]) -> tuple[bytes, bool]:
    """The secret in `path`, made with `make()` if there is none yet; and whether this
    call made it. Workers may race here: the secret is written to a file of this process
    first and then linked into place, and link() never overwrites, so exactly one secret
    wins and every process reads that one, complete (never an empty or partial file)."""
    try:
        return path.read_bytes(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(make())
    try:
        os.link(tmp, path)
        made = True
    except FileExistsError:
        made = False
    finally:
        tmp.unlink()
    return path.read_bytes(), made
