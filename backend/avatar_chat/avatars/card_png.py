"""Character cards in PNG files, as SillyTavern writes them: the card's JSON, base64, in a
`tEXt` chunk with keyword `chara` (V2) or `ccv3` (V3; readers take it over `chara`), the
picture itself the character's image.

Reading walks the chunks itself (no decompression: only `tEXt` is read, `zTXt` and `iTXt`
are not card chunks), checks the card chunk's CRC, and hands the image pipeline
(images.py, with its limits) the PNG without its text chunks. Writing draws the PNG on a
decode thread (`render`): the avatar's stored 512-pixel image, or a placeholder square
with its initial.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import struct
import unicodedata
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from avatar_chat.avatars import card
from avatar_chat.avatars.card import CARD_MAX_BYTES, ImportedCard, card_error, parse_json
from avatar_chat.core.errors import ValidationFailed

log = logging.getLogger(__name__)

SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# The card chunks a reader looks for, in the order it prefers them.
CARD_KEYWORDS: Final = ("ccv3", "chara")
_TEXT_CHUNKS: Final = frozenset({b"tEXt", b"zTXt", b"iTXt"})
# The base64 of a card of CARD_MAX_BYTES, with room for line breaks some writers add.
_CHUNK_TEXT_MAX: Final = (CARD_MAX_BYTES + 2) // 3 * 4 * 77 // 76 + 2
_PLACEHOLDER_SIZE: Final = 512
# Background colours for placeholders (white text is readable on each), chosen by name.
_PALETTE: Final = ((79, 70, 229), (13, 148, 136), (190, 24, 93), (180, 83, 9), (37, 99, 235), (71, 85, 105))


def is_png(data: bytes) -> bool:
    return data.startswith(SIGNATURE)


@dataclass(frozen=True, slots=True)
class CardPng:
    # keyword -> the card's JSON, decoded from the first tEXt chunk of that keyword
    cards: dict[str, bytes]
    # The PNG without its text chunks: the avatar's image, for the image pipeline.
    image: bytes


def _broken(why: str) -> ValidationFailed:
    return ValidationFailed(f"The PNG is broken: {why}.", code="image_undecodable")


def read(png: bytes) -> CardPng:
    """The card chunks of a PNG (none found: 422 card_not_found) and its image. 422
    card_undecodable for a card chunk that does not decode to text (bad CRC, not base64),
    card_too_large over CARD_MAX_BYTES, image_undecodable for a broken chunk layout."""
    texts: dict[str, bytes] = {}
    kept = [SIGNATURE]
    at = len(SIGNATURE)
    while True:
        if at + 12 > len(png):
            raise _broken("it ends before its IEND chunk")
        (length,) = struct.unpack_from(">I", png, at)
        kind = png[at + 4 : at + 8]
        end = at + 12 + length
        if length > 2**31 - 1 or end > len(png):
            raise _broken(f"a {kind.decode('latin-1')!r} chunk runs past the end of the file")
        if kind == b"tEXt":
            keyword, _, text = png[at + 8 : end - 4].partition(b"\0")
            name = keyword.decode("latin-1")
            if name in CARD_KEYWORDS and name not in texts:
                if zlib.crc32(png[at + 4 : end - 4]) != struct.unpack_from(">I", png, end - 4)[0]:
                    raise _undecodable(name, "its CRC does not match")
                texts[name] = text
        if kind not in _TEXT_CHUNKS:
            kept.append(png[at:end])
        at = end
        if kind == b"IEND":
            break
    if not texts:
        raise card_error(
            "card_not_found",
            "This PNG holds no character card (a tEXt chunk named chara or ccv3).",
        )
    return CardPng({name: _decoded(name, text) for name, text in texts.items()}, b"".join(kept))


def read_card(png: bytes) -> tuple[ImportedCard, bytes]:
    """The avatar a PNG card makes (`ccv3` read over `chara`), and the PNG as its image,
    without its text chunks. CPU work: run on a decode thread."""
    found = read(png)
    keyword = next(k for k in CARD_KEYWORDS if k in found.cards)
    where = f"the PNG's {keyword} chunk"
    return card.read_card(parse_json(found.cards[keyword], code="card_undecodable", where=where)), found.image


def _undecodable(name: str, why: str) -> ValidationFailed:
    return card_error("card_undecodable", f"The PNG's {name} chunk is not a character card: {why}.")


def _decoded(name: str, text: bytes) -> bytes:
    if len(text) > _CHUNK_TEXT_MAX:
        raise _too_large(name)
    try:
        decoded = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _undecodable(name, "it is not base64") from None
    if len(decoded) > CARD_MAX_BYTES:
        raise _too_large(name)
    return decoded


def _too_large(name: str) -> ValidationFailed:
    return card_error(
        "card_too_large", f"The card in the PNG's {name} chunk is larger than {CARD_MAX_BYTES} bytes."
    )


def with_cards(png: bytes, cards: Mapping[str, bytes]) -> bytes:
    """`png` (as Pillow wrote it: IEND last) with a tEXt chunk per card (keyword -> JSON,
    written base64) before its IEND."""
    chunks = b""
    for keyword, card_json in cards.items():
        body = b"tEXt" + keyword.encode("latin-1") + b"\0" + base64.b64encode(card_json)
        chunks += struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    iend = len(png) - 12
    assert png[iend + 4 : iend + 8] == b"IEND"
    return png[:iend] + chunks + png[iend:]


def render(image: bytes | None, *, name: str, cards: Mapping[str, bytes]) -> bytes:
    """A card's PNG: `image` (the avatar's stored WebP rendition) as PNG, or without one (or
    when it does not decode) a placeholder for `name`; with the cards' chunks. CPU work:
    run on a decode thread."""
    picture = placeholder(name) if image is None else _stored(image) or placeholder(name)
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=6)
    return with_cards(out.getvalue(), cards)


def _stored(image: bytes) -> Image.Image | None:
    """A stored rendition (WebP, 512 pixels a side, written by images.py), decoded; None
    when it does not decode (damaged in storage: the card still goes out, logged)."""
    try:
        with Image.open(io.BytesIO(image), formats=["WEBP"]) as opened:
            opened.load()
            return opened.copy()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        log.warning("a stored avatar image does not decode (%s): the card's PNG has the placeholder", exc)
        return None


def placeholder(name: str) -> Image.Image:
    """A square of a colour chosen by the name, with its initial in white (none when the
    name starts with nothing the built-in font draws)."""
    size = _PLACEHOLDER_SIZE
    colour = _PALETTE[zlib.crc32(name.encode("utf-8")) % len(_PALETTE)]
    picture = Image.new("RGB", (size, size), colour)
    initial = _initial(name)
    if initial:
        font = ImageFont.load_default(size=size * 9 // 16)
        ImageDraw.Draw(picture).text(
            (size / 2, size / 2), initial, fill=(255, 255, 255), font=font, anchor="mm"
        )
    return picture


def _initial(name: str) -> str:
    """The first letter or digit of the name without its accents, upper case, if ASCII."""
    for char in name:
        base = unicodedata.normalize("NFKD", char)[:1]
        if base.isalnum():
            return base.upper() if base.isascii() else ""
    return ""
