"""Test images, made with Pillow."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(
    fmt: str = "JPEG", size: tuple[int, int] = (640, 480), mode: str = "RGB", **save: object
) -> bytes:
    colours: dict[str, int | tuple[int, ...]] = {"RGBA": (200, 30, 60, 128), "L": 128}
    colour = colours.get(mode, (200, 30, 60))
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format=fmt, **save)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
