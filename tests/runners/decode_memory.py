"""How much memory an avatar image decode takes: the peak RSS growth of `normalise` in a
fresh interpreter (so that memory an earlier allocation freed cannot hide it), on the
decode thread of an ImageDecodes as in a worker, after a warm-up decode of a tiny image
of the same format (plugins imported, thread started). Linux only (/proc/self).

    python -m tests.runners.decode_memory    # the figures in docs/security.md come from it
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.images import COSTLIEST_KINDS, costliest, image_bytes

# Run as `python -c` with: how many decodes at once, how many in all, whether to lift the
# pixel limits (to measure what a pixel costs beyond them), then the image files, decoded
# in turn.
_PROBE = """
import asyncio, gc, io, json, sys
from PIL import Image
from avatar_chat.avatars import images

at_once, total, unlimited, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
if unlimited:
    images.PIXEL_BUDGET = images.MAX_JPEG_PIXELS = 1 << 40
files = [open(path, "rb").read() for path in paths]
tiny = []
for fmt in {Image.open(path).format for path in paths}:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format=fmt)
    tiny.append(out.getvalue())

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))

async def main():
    decodes = images.ImageDecodes(at_once)
    for data in tiny:
        await asyncio.gather(*(decodes.normalise(data) for _ in range(at_once)))
    gc.collect()
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from the current RSS
    for first in range(0, total, at_once):
        turn = [files[n % len(files)] for n in range(first, first + at_once)]
        await asyncio.gather(*(decodes.normalise(data) for data in turn))
    print(json.dumps({"peak_growth_mib": (status("VmHWM") - before) / 2**20}))
    decodes.close()

asyncio.run(main())
"""


def peak_growth_mib(*images: bytes, at_once: int = 1, total: int = 1, unlimited: bool = False) -> float:
    """The peak RSS growth (MiB) of `total` decodes of `images` in turn, `at_once` at a time."""
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for n, data in enumerate(images):
            path = Path(folder) / f"{n}.img"
            path.write_bytes(data)
            paths.append(str(path))
        argv = [str(at_once), str(total), "1" if unlimited else "0", *paths]
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    growth: float = json.loads(done.stdout)["peak_growth_mib"]
    return growth


# Per megapixel, beyond the limits (16 MP, 4096 x 4096): what each kind costs a pixel.
_PER_MEGAPIXEL: dict[str, tuple[str, str, dict[str, object]]] = {
    "PNG RGBA": ("PNG", "RGBA", {"compress_level": 1}),
    "PNG palette": ("PNG", "P", {"compress_level": 1}),
    "WebP RGBA (lossless)": ("WEBP", "RGBA", {"lossless": True}),
    "WebP RGB (lossy)": ("WEBP", "RGB", {}),
    "JPEG 4:2:0 baseline": ("JPEG", "RGB", {"subsampling": 2}),
    "JPEG 4:2:0 progressive": ("JPEG", "RGB", {"subsampling": 2, "progressive": True}),
    "JPEG 4:4:4 progressive": ("JPEG", "RGB", {"subsampling": 0, "progressive": True}),
    "JPEG CMYK progressive": ("JPEG", "CMYK", {"progressive": True}),
}


def main() -> None:
    side = 4096
    print(f"Beyond the limits ({side} x {side}, {side * side / 1e6:.1f} MP), peak growth:")
    for name, (fmt, mode, save) in _PER_MEGAPIXEL.items():
        growth = peak_growth_mib(image_bytes(fmt, (side, side), mode, **save), unlimited=True)
        print(f"  {name:24} {growth:7.1f} MiB  {growth / (side * side / 1e6):5.2f} MiB/MP")
    print("The costliest image of each kind still decoded:")
    worst = 0.0
    for kind in COSTLIEST_KINDS:
        data = costliest(kind)
        growth = peak_growth_mib(data)
        worst = max(worst, growth)
        print(f"  {kind:24} {growth:7.1f} MiB")
    every = [costliest(kind) for kind in COSTLIEST_KINDS]
    print(f"Worst decode: {worst:.1f} MiB. The costliest of every kind in turn:")
    for at_once in (1, 2):
        growth = peak_growth_mib(*every, at_once=at_once, total=20)
        print(f"  {at_once} at a time, 20 in all: {growth:.1f} MiB ({growth / at_once:.1f} MiB a decode)")


if __name__ == "__main__":
    main()
