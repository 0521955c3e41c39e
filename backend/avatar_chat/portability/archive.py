"""A zip written as it is streamed: entries go out as they are written, nothing is held
but what the compressor has not flushed (zipfile writes data descriptors when its output
cannot seek, so no entry needs its size up front)."""

from __future__ import annotations

import io
import time
import zipfile
from typing import Final

# Text compresses well and cheaply at this level (zlib's default is 6).
_LEVEL: Final = 6


class _Sink(io.RawIOBase):
    """Where zipfile writes: bytes kept until `take`, never seekable."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        self._size += len(data)
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return out

    @property
    def pending(self) -> int:
        return self._size


class ZipStream:
    """`begin(name)`, `write(text)`... `end()`, for each entry; `take()` what is ready to
    send after any of them; `close()` writes the central directory (then `take()` it)."""

    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(
            self._sink, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=_LEVEL
        )
        self._entry: io.BufferedIOBase | None = None
        self._when = time.gmtime()[:6]

    def begin(self, name: str) -> None:
        assert self._entry is None, "one entry at a time"
        info = zipfile.ZipInfo(name, date_time=self._when)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16  # a plain file
        self._entry = self._zip.open(info, mode="w")  # type: ignore[assignment]

    def write(self, data: str | bytes) -> None:
        assert self._entry is not None
        self._entry.write(data.encode() if isinstance(data, str) else data)

    def end(self) -> None:
        assert self._entry is not None
        self._entry.close()
        self._entry = None

    def entry(self, name: str, data: str | bytes) -> None:
        self.begin(name)
        self.write(data)
        self.end()

    @property
    def pending(self) -> int:
        """Bytes written and not taken yet."""
        return self._sink.pending

    def take(self) -> bytes:
        return self._sink.take()

    def close(self) -> None:
        self._zip.close()
