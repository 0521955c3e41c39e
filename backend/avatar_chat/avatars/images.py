"""Avatar images: what a client uploads, checked from its bytes and normalised (Pillow) to
square WebP renditions. CPU-bound: `normalise` runs on the threads of a worker's
`ImageDecodes`, which bounds how many run at once.

Memory: one decode holds the image Pillow decodes at full size (PNG, WebP; a JPEG at its
reduced draft scale) and little else: the centre square is converted, premultiplied and
reduced band by band into an image under 2048 pixels a side, then resized (LANCZOS),
then turned by the EXIF orientation. The limits below keep the worst case of every format
under DECODE_PEAK_MIB; `python -m tests.runners.decode_memory` measures them."""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError
from PIL import _imaging as pillow_core  # Image.core

from avatar_chat.core.errors import AppError, ServiceUnavailable, UnsupportedMediaType, ValidationFailed

_In = TypeVar("_In")
_Out = TypeVar("_Out")

# The renditions every image gets, largest first: <folder>/<size>.webp.
SIZES = (512, 128)
CONTENT_TYPE = "image/webp"
_WEBP_QUALITY = 85
# A PNG's text chunks are read into memory (and then dropped with the rest of the metadata):
# Pillow allows 64 MiB of them, which a 200 KiB file can unpack to; 4 MiB is plenty.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 2**20
# Pillow allocates an image in blocks of 16 MiB by default: freed and allocated again in
# other sizes, they leave glibc's arenas fragmented, so that a worker held more than its
# decodes' peaks (two at a time, mixed formats: 166 to 222 MiB over 8 to 200 decodes,
# against a steady 167 MiB with blocks of 1 MiB).
pillow_core.set_block_size(2**20)

# The most one decode holds above what the worker held before it (MiB): the costliest
# image still taken of any format measured 85 MiB (`python -m tests.runners.decode_memory`).
DECODE_PEAK_MIB = 100
# What the pixels of one decode may take, estimated from the header before decoding
# (bytes); more is refused (422 image_too_many_pixels). The rest of DECODE_PEAK_MIB is the
# fixed part: the reduced centre square (16 MiB at most), a band, a PNG's text.
PIXEL_BUDGET = 64 * 2**20
# Bytes a pixel costs, measured (peak RSS growth per megapixel), and the limits they make:
# - a decoded image, whatever its mode (Pillow stores RGB as RGBX): at most 4. A PNG may
#   have 16.7 MP.
DECODED_PIXEL_BYTES = 4
# - a WebP: libwebp's canvas and its copy, the frame Pillow copies out, the image: 16.
#   A WebP may have 4.1 MP.
WEBP_PIXEL_BYTES = 16
# - a JPEG decodes at 1/8 to 1/1 scale (the shorter side stays at least 512), 4 a decoded
#   pixel: a phone's photo (12 to 48 MP) takes about 7 MiB. Unless libjpeg keeps every DCT coefficient
#   until the last scan (a progressive JPEG, or a first scan without every component):
#   then also 2 a coded sample (3 samples a pixel for 4:4:4 colour, 1.5 for 4:2:0, 4 for
#   CMYK), so a progressive JPEG may have about 22 MP in 4:2:0, 11 in 4:4:4, 8 in CMYK.
JPEG_COEFFICIENT_BYTES = 2
# Pixels that any JPEG may declare: decoding them costs time even at 1/8 scale.
MAX_JPEG_PIXELS = 64_000_000
# CPU: these limits also keep one decode under 0.5 s of one core. Measured
# (`python -m tests.runners.decode_cpu`, docs/security.md): about 0.03 s fixed, then per
# megapixel PNG 0.010-0.017 s, WebP 0.007-0.012 s, JPEG 0.001-0.004 s; the costliest image
# still taken, a 16.7 MP RGBA PNG, 0.35-0.39 s.

# Reduce by a whole factor while twice the size remains, then LANCZOS (as Image.thumbnail):
# the reduced centre square is less than 2048 pixels a side (16 MiB).
_REDUCING_GAP = 2.0
# Rows are converted and reduced this many source pixels at a time (1 MiB a band in RGB).
_BAND_PIXELS = 1 << 18
# ImageOps.exif_transpose's table: EXIF orientation -> the operation that displays it.
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def sniff(data: bytes) -> str | None:
    """The image format of these bytes by their signature (the header is not trusted)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def image_kind(data: bytes) -> str:
    """The format `sniff` finds, or 415: checked before anything else about an upload (its
    If-Match, its rate) so a body that is no image is refused as such (RFC 9110, 13.2.1)."""
    kind = sniff(data)
    if kind is None:
        raise UnsupportedMediaType("Upload a PNG, JPEG or WebP image.", code="unsupported_image_type")
    return kind


def _undecodable() -> ValidationFailed:
    return ValidationFailed("The image could not be decoded.", code="image_undecodable")


def _too_many_pixels(megapixels: float) -> ValidationFailed:
    return ValidationFailed(
        f"The image has too many pixels: one like it may have at most {megapixels:g} megapixels.",
        code="image_too_many_pixels",
    )


def normalise(data: bytes) -> list[bytes]:
    """Square WebP renditions in SIZES order (centre-cropped, EXIF orientation applied,
    metadata dropped) of a PNG, JPEG or WebP image. 415 for anything else, 422 when it
    does not decode or declares more pixels than its format's limit."""
    kind = image_kind(data)
    # Pillow warns (DecompressionBombWarning) from 89 MP and refuses from twice that; the
    # limits here refuse far below, so the warning is never acted on (and switching
    # warnings to errors here would change a process-wide filter from a thread).
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as opened:
            _check_pixels(opened, data)
            opened.load()
            # After load: a PNG's eXIf chunk may follow its pixels.
            orientation = opened.getexif().get(ExifTags.Base.Orientation, 1)
            has_alpha = opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info
            image = centre_square(opened, "RGBA" if has_alpha else "RGB", SIZES[0])
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
    # A centred square turns with its image: orientation is applied to the small result.
    if (turn := _ORIENTATIONS.get(orientation)) is not None:
        image = image.transpose(turn)
    renditions = []
    for size in SIZES:  # largest first: each smaller one is made from the one before
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="WEBP", quality=_WEBP_QUALITY, method=4)
        renditions.append(out.getvalue())
    return renditions


def _check_pixels(opened: ImageFile.ImageFile, data: bytes) -> None:
    """Refuse an image whose pixels would take more than PIXEL_BUDGET to decode; a JPEG
    is set to decode at the smallest scale still at least SIZES[0] pixels a side."""
    pixels = opened.width * opened.height
    if isinstance(opened, JpegImagePlugin.JpegImageFile):
        if pixels > MAX_JPEG_PIXELS:
            raise _too_many_pixels(MAX_JPEG_PIXELS / 1_000_000)
        buffered = opened.info.get("progressive") or _jpeg_first_scan_is_partial(data, opened.layers)
        coefficients = JPEG_COEFFICIENT_BYTES * _jpeg_samples_per_pixel(opened) * pixels if buffered else 0
        # The scale follows the shorter side: a long thin JPEG decodes nearly whole.
        opened.draft(opened.mode, (SIZES[0], SIZES[0]))
        cost = coefficients + DECODED_PIXEL_BYTES * opened.width * opened.height
    else:
        cost = (WEBP_PIXEL_BYTES if opened.format == "WEBP" else DECODED_PIXEL_BYTES) * pixels
    if cost > PIXEL_BUDGET:
        # The most pixels an image of this format, shape and coding may have.
        raise _too_many_pixels(math.floor(PIXEL_BUDGET * pixels / cost / 100_000) / 10)


def _jpeg_samples_per_pixel(opened: JpegImagePlugin.JpegImageFile) -> float:
    """Samples a JPEG codes per pixel: 3 for 4:4:4 colour, 1.5 for 4:2:0, 4 for CMYK."""
    factors = [(h, v) for _, h, v, _ in opened.layer]
    if not factors or min(min(h, v) for h, v in factors) < 1:
        return 4.0  # malformed (libjpeg refuses it): the most a JPEG Pillow opens can have
    most = max(h for h, _ in factors) * max(v for _, v in factors)
    return sum(h * v for h, v in factors) / most


def _jpeg_first_scan_is_partial(data: bytes, components: int) -> bool:
    """Whether a sequential JPEG's first scan lacks a component, so that libjpeg keeps
    every coefficient of the image until the last scan (as for a progressive one). Any
    layout this walk does not follow counts as partial: it can only lower the limit."""
    at = 2
    while at + 4 < len(data):
        if data[at] != 0xFF:
            return True
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a segment
            at += 2
        elif marker == 0xDA:  # start of scan: its component count follows the length
            return data[at + 4] < components
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return True


def centre_square(image: Image.Image, mode: str, size: int) -> Image.Image:
    """The centred square of `image`, `size` pixels a side, in `mode` (RGB or RGBA): what
    `image.convert(mode).resize((size, size), LANCZOS, box=<centre square>,
    reducing_gap=2.0)` answers, without its full-size copies (the conversion, and for RGBA
    the premultiplied image that a resize makes): the rows it needs are converted and
    reduced one band at a time into an image of about 2048 pixels a side at most."""
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    scale = side / size
    factor = int(scale / _REDUCING_GAP) or 1
    # The pixels the resampling reads: the box and LANCZOS's support around it (as
    # Image._get_safe_box, so that the reduction's blocks are Pillow's; at least 3 pixels).
    support = max(2.5 * scale, 3.0)
    x0, y0 = max(0, int(box[0] - support)), max(0, int(box[1] - support))
    x1, y1 = min(width, math.ceil(box[2] + support)), min(height, math.ceil(box[3] + support))
    work_mode = "RGBa" if mode == "RGBA" else mode  # LANCZOS on premultiplied alpha, as Pillow
    work = Image.new(work_mode, (math.ceil((x1 - x0) / factor), math.ceil((y1 - y0) / factor)))
    rows = max(1, _BAND_PIXELS // ((x1 - x0) * factor)) * factor  # whole reduction blocks
    for top in range(y0, y1, rows):
        band = image.crop((x0, top, x1, min(top + rows, y1)))
        if band.mode != mode:
            band = band.convert(mode)
        if band.mode != work_mode:
            band = band.convert(work_mode)
        if factor > 1:
            band = band.reduce(factor)
        work.paste(band, (0, (top - y0) // factor))
    inner = ((box[0] - x0) / factor, (box[1] - y0) / factor, (box[2] - x0) / factor, (box[3] - y0) / factor)
    square = work.resize((size, size), Image.Resampling.LANCZOS, box=inner)
    return square.convert(mode) if square.mode != mode else square


class ImageDecodes:
    """At most `at_once` decodes (`normalise`) at a time in this worker, on as many
    threads of their own, so that they hold at most at_once x DECODE_PEAK_MIB (glibc keeps
    an arena of freed memory per thread: decodes spread over a shared pool's threads
    would keep more). One more is refused at once (503 busy, Retry-After), never queued.
    A decode's slot is taken before `admit` runs (the checks that must pass first, such as
    the upload rate: a busy upload is not counted), freed if it fails, and otherwise when
    the decode's thread is done, also when its caller was cancelled."""

    def __init__(self, at_once: int) -> None:
        self._free = at_once  # slots: taken from before `admit` until the decode is done
        self._running = 0
        self._threads = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="image-decode")

    @property
    def running(self) -> int:
        """Decodes whose thread has not finished."""
        return self._running

    async def normalise(
        self, data: bytes, *, admit: Callable[[], Awaitable[object]] | None = None
    ) -> list[bytes]:
        return await self.run(normalise, data, admit=admit)

    async def run(
        self, work: Callable[[_In], _Out], data: _In, *, admit: Callable[[], Awaitable[object]] | None = None
    ) -> _Out:
        """`work(data)` on a decode thread, under the same bound as `normalise` (any other
        work with images: a character card's PNG is drawn here)."""
        if self._free == 0:
            raise ServiceUnavailable(
                "Too many images are being processed right now; retry shortly.", code="busy", retry_after_s=1
            )
        self._free -= 1
        try:
            if admit is not None:
                await admit()
            decode = asyncio.get_running_loop().run_in_executor(self._threads, work, data)
        except BaseException:
            self._free += 1
            raise
        self._running += 1
        decode.add_done_callback(self._release)
        # Shielded: a cancelled caller does not mark the decode done while its thread runs.
        return await asyncio.shield(decode)

    def _release(self, decode: asyncio.Future[Any]) -> None:
        self._free += 1
        self._running -= 1
        if not decode.cancelled():
            decode.exception()  # retrieved: a cancelled caller's failure is not logged as lost

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
