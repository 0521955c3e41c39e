"""How much CPU an avatar image decode takes, per megapixel: `normalise` (decode, centre
square, resize, two WebP renditions) timed with the CPU clock of the thread that runs it,
the best of a few runs, on images of several sizes with the pixel limits lifted, so that
the cost of a pixel beyond them shows too. One colour (what an attacker sends: the most
pixels for the fewest bytes) and noise (a photo's worst case for the codecs).

    python -m tests.runners.decode_cpu    # the figures in docs/security.md come from it
"""

from __future__ import annotations

import io
import random
import time

from PIL import Image

from avatar_chat.avatars import images
from avatar_chat.core.errors import AppError
from tests.support.images import COSTLIEST_KINDS, costliest

# (label, Pillow format, mode, encoder options)
_KINDS: list[tuple[str, str, str, dict[str, object]]] = [
    ("PNG", "PNG", "RGB", {}),
    ("PNG RGBA", "PNG", "RGBA", {}),
    ("JPEG", "JPEG", "RGB", {"quality": 90}),
    ("JPEG progressive", "JPEG", "RGB", {"quality": 90, "progressive": True}),
    ("WebP lossy", "WEBP", "RGB", {"quality": 80}),
    ("WebP lossless", "WEBP", "RGB", {"lossless": True}),
]
_MEGAPIXELS = (1, 4, 16, 36)
_RUNS = 3


def _image(fmt: str, mode: str, side: int, noise: bool, save: dict[str, object]) -> bytes:
    if noise:
        # Noise in 8x8 blocks: incompressible enough, and cheap to make.
        small = Image.frombytes(mode, (side // 8, side // 8), random.randbytes((side // 8) ** 2 * len(mode)))
        picture = small.resize((side, side), Image.Resampling.NEAREST)
    else:
        picture = Image.new(mode, (side, side), (200, 30, 60, 255)[: len(mode)])
    out = io.BytesIO()
    picture.save(out, format=fmt, **save)
    return out.getvalue()


def cpu_s(data: bytes) -> float:
    """The least thread CPU time of _RUNS decodes of `data`."""
    best = float("inf")
    for _ in range(_RUNS):
        start = time.thread_time()
        images.normalise(data)
        best = min(best, time.thread_time() - start)
    return best


def _refused_s(data: bytes) -> float:
    start = time.thread_time()
    try:
        images.normalise(data)
    except AppError:
        return time.thread_time() - start
    raise AssertionError("taken")


def limits() -> None:
    """With the limits as they are: the costliest image of each kind still taken, the
    largest JPEG (64 MP declared) and what refusing the review's 36 MP PNG costs."""
    print(f"{'with the limits':<34} {'MP':>5} {'KiB':>7} {'CPU s':>7}")
    rows = [(f"costliest {kind}", costliest(kind)) for kind in COSTLIEST_KINDS]
    rows.append(("JPEG 8000 x 8000, one colour", _image("JPEG", "RGB", 8000, False, {})))
    rows.append(("JPEG 4600 x 4600 progressive", _image("JPEG", "RGB", 4600, False, {"progressive": True})))
    for label, data in rows:
        with Image.open(io.BytesIO(data)) as opened:
            mp = opened.width * opened.height / 1e6
        print(f"{label:<34} {mp:>5.1f} {len(data) / 1024:>7.0f} {cpu_s(data):>7.3f}", flush=True)
    refused = _image("PNG", "RGB", 6000, False, {})
    label = "refused: PNG 6000 x 6000 (422)"
    print(f"{label:<34} {36.0:>5.1f} {len(refused) / 1024:>7.0f} {_refused_s(refused):>7.3f}")


def main() -> None:
    random.seed(18)
    images.normalise(_image("PNG", "RGB", 64, False, {}))  # warm-up: plugins, WebP encoder
    limits()
    print()
    images.PIXEL_BUDGET = images.MAX_JPEG_PIXELS = 1 << 40  # measure beyond the limits too
    print(f"{'kind':<18} {'content':<10} {'MP':>4} {'KiB':>8} {'CPU s':>7} {'s/MP':>6}")
    for label, fmt, mode, save in _KINDS:
        for noise in (False, True):
            for megapixels in _MEGAPIXELS:
                side = int((megapixels * 1_000_000) ** 0.5)
                data = _image(fmt, mode, side, noise, save)
                seconds = cpu_s(data)
                content = "noise" if noise else "one colour"
                mp = side * side / 1e6
                print(
                    f"{label:<18} {content:<10} {mp:>4.0f} {len(data) / 1024:>8.0f} {seconds:>7.3f}"
                    f" {seconds / mp:>6.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
