"""Test images, made with Pillow."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from avatar_chat.avatars.images import (
    DECODED_PIXEL_BYTES,
    JPEG_COEFFICIENT_BYTES,
    PIXEL_BUDGET,
    WEBP_PIXEL_BYTES,
)


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (640, 480), mode: str = "RGB", **save: object
) -> bytes:
    colours: dict[str, int | tuple[int, ...]] = {
        "RGBA": (200, 30, 60, 128),
        "LA": (128, 100),
        "CMYK": (20, 200, 100, 10),
        "L": 128,
        "P": 3,
    }
    colour = colours.get(mode, (200, 30, 60))
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format=fmt, **save)
    return out.getvalue()


def png_with_text(chunks: int) -> bytes:
    """A small PNG with this many zTXt chunks, each 1 KiB that unpacks to 1 MiB."""
    png = image_bytes("PNG", (64, 64))
    text = zlib.compress(b"a" * (2**20 - 16), 9)
    extra = b""
    for n in range(chunks):
        body = b"zTXt" + f"note{n}".encode() + b"\0\0" + text
        extra += struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    header_end = 8 + 25  # the signature, then IHDR
    return png[:header_end] + extra + png[header_end:]


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# The costliest image of each kind that is still decoded: its pixels take all of
# PIXEL_BUDGET, and its shorter side gives the largest reduced centre square (just under
# 2048 pixels) or, for a JPEG, the full scale (under 1024 pixels).
# kind: (format, mode, shorter side, bytes a pixel costs, encoder options)
_COSTLIEST: dict[str, tuple[str, str, int, int, dict[str, object]]] = {
    "png": ("PNG", "RGBA", 2047, DECODED_PIXEL_BYTES, {"compress_level": 1}),
    "webp": ("WEBP", "RGBA", 2047, WEBP_PIXEL_BYTES, {"lossless": True}),
    # Decoded whole: the scale a JPEG decodes at follows its shorter side.
    "jpeg": ("JPEG", "RGB", 1023, DECODED_PIXEL_BYTES, {}),
    # Decoded whole, and every coefficient of its four 4:4:4 components kept until the last scan.
    "jpeg-progressive": (
        "JPEG",
        "CMYK",
        1023,
        DECODED_PIXEL_BYTES + 4 * JPEG_COEFFICIENT_BYTES,
        {"progressive": True},
    ),
}
COSTLIEST_KINDS = tuple(_COSTLIEST)


def costliest(kind: str, *, extra_rows: int = 0) -> bytes:
    """The costliest image of a kind still decoded; with `extra_rows`, that many rows
    longer (one is enough to be refused)."""
    fmt, mode, side, cost, save = _COSTLIEST[kind]
    return image_bytes(fmt, (side, PIXEL_BUDGET // cost // side + extra_rows), mode, **save)
