"""Avatar images: what a client uploads, checked from its bytes and normalised (Pillow) to
square WebP renditions. CPU-bound: callers run `normalise` in a worker thread."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from avatar_chat.core.errors import AppError, UnsupportedMediaType, ValidationFailed

# The renditions every image gets, largest first: <folder>/<size>.webp.
SIZES = (512, 128)
CONTENT_TYPE = "image/webp"
# Decoding more pixels than this is refused before it is attempted (decompression bombs):
# 40 MP is more than any phone camera's photo.
MAX_PIXELS = 40_000_000
_WEBP_QUALITY = 85


def sniff(data: bytes) -> str | None:
    """The image format of these bytes by their signature (the header is not trusted)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _undecodable() -> ValidationFailed:
    return ValidationFailed("The image could not be decoded.", code="image_undecodable")


def normalise(data: bytes) -> list[bytes]:
    """Square WebP renditions in SIZES order (centre-cropped, EXIF orientation applied,
    metadata dropped) of a PNG, JPEG or WebP image. 415 for anything else, 422 when it
    does not decode."""
    kind = sniff(data)
    if kind is None:
        raise UnsupportedMediaType("Upload a PNG, JPEG or WebP image.", code="unsupported_image_type")
    # Pillow warns (DecompressionBombWarning) from 89 MP and refuses from twice that;
    # the size check below refuses from MAX_PIXELS, so the warning is never acted on (and
    # switching warnings to errors here would change a process-wide filter from a thread).
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise ValidationFailed(
                    f"The image has more than {MAX_PIXELS // 1_000_000} megapixels.",
                    code="image_too_many_pixels",
                )
            # A JPEG decodes straight at a reduced scale still above the largest size.
            opened.draft(opened.mode, (SIZES[0], SIZES[0]))
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except AppError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,  # where warnings are errors
    ):
        raise _undecodable() from None
    if width < 1 or height < 1:
        raise _undecodable()
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    renditions = []
    for size in SIZES:  # largest first: each smaller one is made from the one before
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=_WEBP_QUALITY, method=4)
        renditions.append(out.getvalue())
    return renditions
