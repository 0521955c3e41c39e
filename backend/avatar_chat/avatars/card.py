"""Character cards: an avatar read from, and written as, a Character Card V2
(malfoy/character-card-spec-v2) or V3 (kwaroran/character-card-spec-v3), the JSON in which
SillyTavern and other front-ends exchange characters, alone or inside a PNG (card_png.py).

Reading a card (POST /avatars/me/card), the avatar takes from its `data`:

- `name`: `name`, at most 80 characters and not only spaces; trimmed.
- `personality`: `extensions.avatar_chat.personality` when it is one of ours (a card this
  API wrote); else the keywords of KEYWORDS found in the card's `personality` text, else in
  its `tags`, else in its `description` (the first of these with any: the personality
  with the most keywords there, a tie going to the one named first); else `friendly`.
- `backstory`: `description`, then a blank line and "Personality: " and the `personality`
  text (left out when it is only what this API writes for the avatar's personality, see
  `persona_line`), both trimmed. Over 4000 characters it is refused (422
  card_backstory_too_long), never cut.
- Everything else of the card is kept (avatars.card): `spec`, `spec_version`, and `data`
  without `name` (`description` and `personality` as they were, to be written back).
  Fields outside `data` (the V1 copies some editors add at the top) are not kept.

Writing one (GET /avatars/me/card): the card kept, with `name` the avatar's. While the
backstory is still what the kept `description` and `personality` make, they are written
as they came; once it changed (or without a kept card), `description` is the backstory and
`personality` the avatar's personality in words. `extensions.avatar_chat.personality` is
the avatar's personality. Fields the spec requires and the card lacked are written empty.
So a card goes out with everything it came in with, and a card this API wrote comes back
in as the same avatar.

Every check here runs before anything is written; each refusal is a 422 with a code of
its own (docs/api.md#character-cards).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from avatar_chat.avatars.persona import TRAITS, PersonalityType
from avatar_chat.avatars.schemas import BACKSTORY_MAX, NAME_MAX, CardDataV2, CardDataV3
from avatar_chat.core.errors import ValidationFailed
from avatar_chat.core.schemas import WHITESPACE

SPEC_V2: Final = "chara_card_v2"
SPEC_V3: Final = "chara_card_v3"
SPEC_VERSIONS: Final = {SPEC_V2: "2.0", SPEC_V3: "3.0"}
# A card's JSON, as a body or decoded from a PNG chunk: every text in it is bounded by this.
CARD_MAX_BYTES: Final = 2**20
# Arrays and objects within each other; real cards nest a handful (the lorebook's entries).
MAX_DEPTH: Final = 32
# Where a card written by this API says which of our personalities the avatar has.
EXTENSION: Final = "avatar_chat"

# The fields of `data` in the order the specs list them; V3 adds its own.
V2_FIELDS: Final = tuple(CardDataV2.model_fields)
V3_ONLY_FIELDS: Final = tuple(f for f in CardDataV3.model_fields if f not in CardDataV2.model_fields)
# What a field the spec requires is written as when the card had none.
_EMPTY: Final[Mapping[str, object]] = {
    "description": "",
    "personality": "",
    "scenario": "",
    "first_mes": "",
    "mes_example": "",
    "creator_notes": "",
    "system_prompt": "",
    "post_history_instructions": "",
    "alternate_greetings": [],
    "tags": [],
    "creator": "",
    "character_version": "",
    "extensions": {},
}
_EMPTY_V3: Final[Mapping[str, object]] = {**_EMPTY, "group_only_greetings": []}

# The words (whole, any case) that choose each personality; see the module's docstring.
KEYWORDS: Final[Mapping[PersonalityType, tuple[str, ...]]] = {
    PersonalityType.friendly: (
        "friendly", "warm", "cheerful", "outgoing", "welcoming", "sociable", "approachable",
        "amiable", "upbeat", "easygoing", "easy-going",
    ),
    PersonalityType.professional: (
        "professional", "formal", "serious", "businesslike", "polite", "precise", "efficient",
        "competent", "courteous", "stoic", "disciplined", "methodical", "reserved",
    ),
    PersonalityType.playful: (
        "playful", "mischievous", "silly", "energetic", "bubbly", "teasing", "whimsical",
        "goofy", "hyper", "fun-loving", "childish", "light-hearted", "lighthearted",
    ),
    PersonalityType.caring: (
        "caring", "gentle", "kind-hearted", "kindhearted", "nurturing", "supportive",
        "compassionate", "empathetic", "motherly", "protective", "tender", "sweet", "patient",
    ),
    PersonalityType.witty: (
        "witty", "sarcastic", "clever", "sardonic", "snarky", "quick-witted", "ironic",
        "humorous", "humourous", "dry humor", "dry humour", "deadpan", "sharp-tongued",
    ),
}  # fmt: skip
_KEYWORD = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(k) for ks in KEYWORDS.values() for k in ks) + r")(?![\w-])",
    re.IGNORECASE,
)
_PERSONALITY_OF_KEYWORD: Final = {k: p for p, ks in KEYWORDS.items() for k in ks}
_DATA_URI = re.compile(r"data:(image/(?:png|jpeg|webp));base64,", re.IGNORECASE)


def card_error(code: str, message: str, details: Any = None) -> ValidationFailed:
    return ValidationFailed(message, code=code, details=details)


def _invalid(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> ValidationFailed:
    return card_error(
        "card_invalid",
        "The character card is not valid: " + msg,
        [{"loc": [str(part) for part in loc], "type": kind, "msg": msg}],
    )


@dataclass(frozen=True, slots=True)
class ImportedCard:
    """What an avatar takes from a card, and what is kept of it (avatars.card)."""

    name: str
    personality: PersonalityType
    backstory: str
    kept: dict[str, Any]
    # The image of a V3 `icon` asset embedded as a data URI (a JSON card's image), if any.
    icon: bytes | None


def parse_json(raw: bytes, *, code: str, where: str) -> Any:
    """The JSON value of `raw` (UTF-8): 422 `code` when it is not JSON (NaN and Infinity
    are not JSON; nor are integers of more than 4300 digits, nor nesting Python cannot read)."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "it is not JSON"
        raise card_error(code, f"The character card in {where} cannot be read: {reason}.") from None


def read_json_card(body: bytes) -> ImportedCard:
    """The avatar a card sent as JSON makes. CPU work: run on a decode thread."""
    return read_card(parse_json(body, code="card_malformed", where="the body"))


def read_card(card: Any) -> ImportedCard:
    """The avatar a parsed card makes; 422 for anything but a V2 or V3 card the avatar can hold."""
    if not isinstance(card, dict):
        raise _unsupported("it is not a JSON object")
    spec = card.get("spec")
    if not isinstance(spec, str) or spec not in SPEC_VERSIONS:
        raise _unsupported(f"its spec is {_shown(spec)}")
    spec_version = card.get("spec_version", SPEC_VERSIONS[spec])
    if not isinstance(spec_version, str) or not spec_version.startswith(SPEC_VERSIONS[spec][:2]):
        raise _unsupported(f"its spec_version is {_shown(spec_version)} for {spec}")
    _check_text(spec_version, ["spec_version"])
    data = card.get("data")
    if not isinstance(data, dict):
        raise _invalid(["data"], "data must be an object")
    _check_values(data, ["data"], 1)
    model = CardDataV3 if spec == SPEC_V3 else CardDataV2
    # A field the spec names, sent as null, is read as left out (and not kept).
    data = {k: v for k, v in data.items() if not (v is None and k in model.model_fields and k != "name")}
    try:
        model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise card_error(
            "card_invalid",
            f"The character card is not valid: data.{'.'.join(map(str, first['loc']))}: {first['msg']}.",
            [
                {"loc": ["data", *map(str, e["loc"])], "type": e["type"], "msg": e["msg"]}
                for e in exc.errors()
            ],
        ) from None
    name = data["name"].strip(WHITESPACE)
    if not 1 <= len(name) <= NAME_MAX:
        raise _invalid(["data", "name"], f"the name must have 1 to {NAME_MAX} characters (trimmed)")
    description = data.get("description", "")
    personality_text = data.get("personality", "")
    personality = personality_of(data)
    backstory = backstory_of(description, personality_text, personality)
    if len(backstory) > BACKSTORY_MAX:
        raise card_error(
            "card_backstory_too_long",
            f"The card's description and personality make a backstory of {len(backstory)} characters;"
            f" an avatar's may have {BACKSTORY_MAX}. Shorten them and send the card again.",
            {"length": len(backstory), "limit": BACKSTORY_MAX},
        )
    kept = {
        "spec": spec,
        "spec_version": spec_version,
        "data": {k: v for k, v in data.items() if k != "name"},
    }
    return ImportedCard(name, personality, backstory, kept, _icon(data) if spec == SPEC_V3 else None)


def _unsupported(why: str) -> ValidationFailed:
    return card_error(
        "card_unsupported_spec",
        f"Not a character card this API reads ({why}): send a Character Card V2"
        f' ("spec": "{SPEC_V2}") or V3 ("spec": "{SPEC_V3}").',
    )


def _shown(value: object) -> str:
    if value is None:
        return "missing"
    if not isinstance(value, str):
        return f"not a string but {type(value).__name__}"
    text = json.dumps(value[:40])
    return text if len(value) <= 40 else text[:-1] + '..."'


def _check_values(value: Any, loc: list[str | int], depth: int) -> None:
    """What a JSON parser lets through and Postgres does not keep (NUL, unpaired
    surrogates, infinite numbers), and nesting deeper than MAX_DEPTH."""
    if isinstance(value, str):
        _check_text(value, loc)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _invalid(loc, "a number is too large")
    elif isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            raise _invalid(loc, f"the card nests more than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_text(key, loc)
            _check_values(item, [*loc, key], depth + 1)


def _check_text(text: str, loc: list[str | int]) -> None:
    if "\x00" in text:
        raise _invalid(loc, "a text holds a NUL character (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(loc, "a text holds an unpaired surrogate (\\ud800-\\udfff)") from None


def personality_of(data: Mapping[str, Any]) -> PersonalityType:
    """Our personality for a card's `data`: see the module's docstring."""
    extensions = data.get("extensions")
    ours = extensions.get(EXTENSION) if isinstance(extensions, dict) else None
    named = ours.get("personality") if isinstance(ours, dict) else None
    if isinstance(named, str) and named in PersonalityType.__members__:
        return PersonalityType(named)
    sources = (data.get("personality", ""), ", ".join(data.get("tags", [])), data.get("description", ""))
    for text in sources:
        if (found := _by_keywords(text)) is not None:
            return found
    return PersonalityType.friendly


def _by_keywords(text: str) -> PersonalityType | None:
    hits: dict[PersonalityType, int] = {}
    for match in _KEYWORD.finditer(text):
        personality = _PERSONALITY_OF_KEYWORD[match[1].lower()]
        hits[personality] = hits.get(personality, 0) + 1  # dicts keep the first found first
    return max(hits, key=hits.__getitem__) if hits else None


def persona_line(personality: PersonalityType) -> str:
    """A card's `personality` text for an avatar: "witty: clever, quick and dryly humorous"."""
    return f"{personality.value}: {TRAITS[personality]}"


def backstory_of(description: str, personality_text: str, personality: PersonalityType) -> str:
    """The backstory a card's `description` and `personality` make (module docstring)."""
    parts = [description.strip()]
    text = personality_text.strip()
    if text and text != persona_line(personality):
        parts.append(f"Personality: {text}")
    return "\n\n".join(part for part in parts if part)


def _icon(data: Mapping[str, Any]) -> bytes | None:
    """The image of a V3 card's main icon when it is embedded as a data URI (PNG, JPEG or
    WebP); None when there is none. Links are never fetched."""
    assets = data.get("assets") or []
    icons = [(n, a) for n, a in enumerate(assets) if a.get("type") == "icon"]
    icons.sort(key=lambda pair: pair[1].get("name") != "main")
    if not icons:
        return None
    n, icon = icons[0]
    uri: str = icon["uri"]
    if not uri.startswith("data:"):
        return None
    match = _DATA_URI.match(uri)
    if match is None:
        raise _invalid(["data", "assets", n, "uri"], "an icon's data URI must be base64 PNG, JPEG or WebP")
    try:
        return base64.b64decode(uri[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(["data", "assets", n, "uri"], "an icon's data URI is not valid base64") from None


# --- writing -------------------------------------------------------------------------------


def card_of(name: str, personality: PersonalityType, backstory: str, kept: Any) -> dict[str, Any]:
    """The card of an avatar, with what was kept of the card it came from (None: none)."""
    if not (
        isinstance(kept, dict) and kept.get("spec") in SPEC_VERSIONS and isinstance(kept.get("data"), dict)
    ):
        kept = {"spec": SPEC_V2, "spec_version": SPEC_VERSIONS[SPEC_V2], "data": {}}
        as_kept = False
    else:
        as_kept = True
    spec: str = kept["spec"]
    kept_data: dict[str, Any] = kept["data"]
    data: dict[str, Any] = {"name": name}
    for field, empty in (_EMPTY_V3 if spec == SPEC_V3 else _EMPTY).items():
        data[field] = kept_data.get(field, empty)
    data.update((k, v) for k, v in kept_data.items() if k != "name")
    description, personality_text = data["description"], data["personality"]
    unchanged = (
        as_kept
        and isinstance(description, str)
        and isinstance(personality_text, str)
        and backstory_of(description, personality_text, personality) == backstory
    )
    if not unchanged:
        data["description"] = backstory
        data["personality"] = persona_line(personality)
    extensions = data["extensions"] if isinstance(data["extensions"], dict) else {}
    ours = extensions.get(EXTENSION)
    ours = ours if isinstance(ours, dict) else {}
    data["extensions"] = {**extensions, EXTENSION: {**ours, "personality": personality.value}}
    return {"spec": spec, "spec_version": kept.get("spec_version") or SPEC_VERSIONS[spec], "data": data}


def v2_of(card: Mapping[str, Any]) -> dict[str, Any]:
    """A V3 card as V2 (what older readers take from a PNG's `chara` chunk): V2's fields and
    any others, without those V3 added."""
    data = {k: v for k, v in card["data"].items() if k not in V3_ONLY_FIELDS}
    return {"spec": SPEC_V2, "spec_version": SPEC_VERSIONS[SPEC_V2], "data": data}


def encoded(card: Mapping[str, Any]) -> bytes:
    """A card as JSON: UTF-8, as compact as it is readable."""
    return json.dumps(card, ensure_ascii=False).encode("utf-8")
