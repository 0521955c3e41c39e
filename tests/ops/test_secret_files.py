"""Per-machine secrets (the local JWT secret, the local store's URL-signing key): workers
starting at once must all end up with the same, complete secret."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import stat
from pathlib import Path

import pytest

from avatar_chat.ops.embedded import local_jwt_secret
from avatar_chat.ops.secret_files import WeakSecretFile, read_or_create
from avatar_chat.storage.local import LocalObjectStore, _signing_key


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
    one, two = b"1" * 32, b"2" * 32
    first, made = read_or_create(path, lambda: one)
    again, made_again = read_or_create(path, lambda: two)
    assert (first, made, again, made_again) == (one, True, one, False)


@pytest.mark.parametrize("held", [b"", b"short", b"x" * 31])
def test_a_secret_file_too_short_to_sign_with_is_refused(tmp_path: Path, held: bytes) -> None:
    """Empty (a crash of an older version between create and write, a hand edit) or short:
    refused with what to do, never used (an empty HMAC key lets anyone sign)."""
    path = tmp_path / "secret"
    path.write_bytes(held)
    with pytest.raises(WeakSecretFile, match="remove the file"):
        read_or_create(path, lambda: b"n" * 32)
    assert path.read_bytes() == held  # left for the operator to look at


def test_a_weak_new_secret_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(WeakSecretFile):
        read_or_create(tmp_path / "secret", lambda: b"")
    assert list(tmp_path.iterdir()) == []


def test_the_local_jwt_secret_counts_without_a_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_bytes(b"s" * 31 + b"\n")
    with pytest.raises(WeakSecretFile):
        local_jwt_secret(tmp_path)
    (tmp_path / "jwt_secret").write_bytes(b"s" * 40 + b"\n")
    assert local_jwt_secret(tmp_path) == "s" * 40


async def test_stored_images_and_their_folders_are_private(tmp_path: Path) -> None:
    """Other accounts on the machine read nothing of the local store; a root that an older
    version made with the umask's mode is made private when opened."""
    root = tmp_path / "storage"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    store = await LocalObjectStore.open(root, "avatars")
    await store.upload("u1/f1/512.webp", b"image", "image/webp")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for folder in (root / "avatars", root / "avatars/u1", root / "avatars/u1/f1"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((root / "avatars/u1/f1/512.webp").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / ".signing-key").stat().st_mode) == 0o600
