"""Decoding an avatar image (no database): the memory one decode takes, what is refused
before decoding, and that the renditions show what the old full-size decode showed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageChops, ImageOps, ImageStat

from avatar_chat.avatars.images import DECODE_PEAK_MIB, MAX_JPEG_PIXELS, SIZES, normalise
from avatar_chat.core.errors import ValidationFailed
from tests.runners.decode_memory import peak_growth_mib
from tests.support.images import COSTLIEST_KINDS, costliest, decoded, image_bytes, png_with_text

linux_only = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from /proc/self (Linux)"
)


@linux_only
@pytest.mark.parametrize("kind", COSTLIEST_KINDS)
def test_the_costliest_image_still_taken_decodes_within_the_peak(kind: str) -> None:
    # A fresh interpreter per image: memory an earlier test freed cannot hide the peak.
    assert peak_growth_mib(costliest(kind)) < DECODE_PEAK_MIB


@linux_only
def test_a_phone_photo_decodes_at_an_eighth_of_its_size() -> None:
    photo = image_bytes("JPEG", (8064, 6048), subsampling=2)  # 48.8 MP, 4:2:0, baseline
    assert peak_growth_mib(photo) < 16  # measured: 7 MiB


@pytest.mark.parametrize("kind", COSTLIEST_KINDS)
def test_one_row_more_than_the_costliest_is_refused_before_decoding(kind: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        normalise(costliest(kind, extra_rows=1))
    assert refused.value.code == "image_too_many_pixels"
    assert "megapixels" in refused.value.message


def test_a_png_whose_text_unpacks_to_more_than_4_mib_is_refused() -> None:
    assert len(normalise(png_with_text(3))) == len(SIZES)  # dropped with the metadata
    # Pillow would hold up to 64 MiB of it (from a file of 66 KiB here).
    with pytest.raises(ValidationFailed) as refused:
        normalise(png_with_text(64))
    assert refused.value.code == "image_undecodable"


def _declaring(jpeg: bytes, size: tuple[int, int]) -> bytes:
    """A small baseline JPEG whose frame header declares another size."""
    frame = jpeg.index(b"\xff\xc0")
    width, height = size
    return jpeg[: frame + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[frame + 9 :]


def test_a_jpeg_declaring_more_than_its_limit_is_refused_whatever_its_scale() -> None:
    small = image_bytes("JPEG", (64, 64))
    with pytest.raises(ValidationFailed) as refused:
        normalise(_declaring(small, (8000, MAX_JPEG_PIXELS // 8000 + 1)))
    assert refused.value.code == "image_too_many_pixels"
    # At the limit it is decoded (libjpeg fills in what the data lacks), at 1/8 scale.
    assert len(normalise(_declaring(small, (8000, MAX_JPEG_PIXELS // 8000)))) == len(SIZES)


def test_a_jpeg_whose_first_scan_lacks_a_component_counts_as_progressive() -> None:
    # libjpeg keeps every coefficient of such a file until its last scan, 6 bytes a pixel
    # for 4:4:4 colour: this one (12 MP, decoded at 1/2 scale: 12 MB) is taken as one
    # scan, and refused (72 MB more) when its first scan holds one component only.
    whole = image_bytes("JPEG", (6000, 2000), subsampling=0)
    assert len(normalise(whole)) == len(SIZES)
    scan = whole.index(b"\xff\xda")
    assert whole[scan + 4] == 3  # the components of the first scan
    split = whole[: scan + 4] + b"\x01" + whole[scan + 5 :]
    with pytest.raises(ValidationFailed) as refused:
        normalise(split)
    assert refused.value.code == "image_too_many_pixels"


# EXIF orientation -> what turns the upright picture into the stored one (the inverse of
# what displays it).
_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
_RED, _GREEN, _BLUE = (220, 20, 20), (20, 180, 20), (20, 20, 220)


def _upright(size: tuple[int, int]) -> Image.Image:
    """Quadrants red, green / blue, a grey gradient, as displayed."""
    width, height = size
    picture = Image.linear_gradient("L").resize(size).convert("RGB")
    picture.paste(_RED, (0, 0, width // 2, height // 2))
    picture.paste(_GREEN, (width // 2, 0, width, height // 2))
    picture.paste(_BLUE, (0, height // 2, width // 2, height))
    return picture


def _stored(size: tuple[int, int], orientation: int, fmt: str) -> bytes:
    """The upright picture as a camera stores it with this EXIF orientation."""
    picture = _upright(size)
    exif = Image.Exif()
    if orientation != 1:
        picture = picture.transpose(_STORED[orientation])
        exif[ExifTags.Base.Orientation] = orientation
    out = io.BytesIO()
    picture.save(out, format=fmt, exif=exif.tobytes())
    return out.getvalue()


def _as_before(data: bytes) -> Image.Image:
    """What the full-size decode answered: orientation applied to the whole image, then
    converted (a copy), then fitted (LANCZOS from every pixel), then the same WebP."""
    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened)
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
    fitted = ImageOps.fit(
        upright.convert("RGBA" if has_alpha else "RGB"), (SIZES[0], SIZES[0]), method=Image.Resampling.LANCZOS
    )
    out = io.BytesIO()
    fitted.save(out, format="WEBP", quality=85, method=4)
    return decoded(out.getvalue())


def _assert_close(got: Image.Image, expected: Image.Image) -> None:
    """The same picture: what the reduction before LANCZOS and the order of the steps
    change is a few levels at edges, a fraction of a level on average."""
    assert got.mode == expected.mode and got.size == expected.size
    difference = ImageStat.Stat(ImageChops.difference(got, expected))
    assert max(high for _, high in difference.extrema) <= 32
    assert max(difference.mean) < 0.5


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_shows_the_same_pixels_as_before(orientation: int) -> None:
    # Wider than tall by an odd number of pixels (the centre square starts mid-pixel), and
    # large enough to be reduced before the resize.
    data = _stored((2601, 2100), orientation, "PNG")
    _assert_close(decoded(normalise(data)[0]), _as_before(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_a_jpeg_is_shown_upright(orientation: int) -> None:
    picture = decoded(normalise(_stored((400, 641), orientation, "JPEG"))[0])
    quadrants = {(128, 128): _RED, (384, 128): _GREEN, (128, 384): _BLUE}
    for point, colour in quadrants.items():
        pixel = picture.getpixel(point)
        assert isinstance(pixel, tuple)
        assert max(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 24, (point, pixel)


@pytest.mark.parametrize(
    ("fmt", "mode", "size", "save"),
    [
        ("PNG", "P", (2100, 3001), {"transparency": 0}),
        ("PNG", "LA", (3001, 2100), {}),
        ("PNG", "L", (700, 500), {}),
        ("PNG", "RGBA", (4100, 2100), {}),
        ("PNG", "I;16", (2100, 2300), {}),
        ("WEBP", "RGBA", (1900, 2100), {"lossless": True}),
        ("JPEG", "CMYK", (2600, 2100), {}),
        ("JPEG", "L", (300, 900), {}),
    ],
)
def test_every_mode_is_converted_as_before(
    fmt: str, mode: str, size: tuple[int, int], save: dict[str, object]
) -> None:
    gradient = Image.linear_gradient("L").resize(size)
    picture = Image.merge(
        "RGBA", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient, gradient)
    )
    source = picture.convert("P") if mode == "P" else picture.convert(mode)
    out = io.BytesIO()
    source.save(out, format=fmt, **save)
    data = out.getvalue()
    _assert_close(decoded(normalise(data)[0]), _as_before(data))
