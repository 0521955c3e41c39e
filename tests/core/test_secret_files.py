"""Per-machine secrets (the local JWT secret, the local store's URL-signing key): workers
starting at once must all end up with the same, complete secret."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import stat
from pathlib import Path

from avatar_chat.core.secret_files import read_or_create
from avatar_chat.storage.local import _signing_key


def _read_key(
    root: str, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue[bytes]
) -> None:
    start.wait()
    out.put(_signing_key(Path(root)))


def test_workers_racing_for_the_signing_key_all_get_the_same_whole_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        root = tmp_path / f"storage{attempt}"
        start, out = ctx.Barrier(8), ctx.Queue()
        workers = [ctx.Process(target=_read_key, args=(str(root), start, out)) for _ in range(8)]
        for worker in workers:
            worker.start()
        keys = [out.get(timeout=30) for _ in workers]
        for worker in workers:
            worker.join(30)
        assert len(set(keys)) == 1 and len(keys[0]) == 32, keys
        key_file = root / ".signing-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert sorted(p.name for p in root.iterdir()) == [".signing-key"]  # no temporary file left


def test_an_existing_secret_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    first, made = read_or_create(path, lambda: b"one")
    again, made_again = read_or_create(path, lambda: b"two")
    assert (first, made, again, made_again) == (b"one", True, b"one", False)
