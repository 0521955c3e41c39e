"""Avatar payloads: Create / Update / Read, the persona switch, the persona history, and
the character cards."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from avatar_chat.avatars.persona import PersonalityType
from avatar_chat.core.schemas import (
    NOT_BLANK,
    TEXT,
    NextCursor,
    PartialUpdate,
    RowModel,
    StrictModel,
    stripped,
)

NAME_MAX = 80
BACKSTORY_MAX = 4000
HISTORY_PAGE_MAX = 100
# Versions in paths and cursors: the integers every JSON client holds exactly.
VERSION_MAX = 2**53

AvatarName = Annotated[
    str, StringConstraints(max_length=NAME_MAX, pattern=NOT_BLANK), AfterValidator(stripped)
]
Backstory = Annotated[str, StringConstraints(max_length=BACKSTORY_MAX, pattern=TEXT)]


class AvatarCreate(StrictModel):
    examples = (
        {"name": "Rae", "personality": "playful", "backstory": "A lighthouse keeper who loves puns."},
    )

    name: AvatarName
    personality: PersonalityType = PersonalityType.friendly
    backstory: Backstory = ""


class AvatarUpdate(PartialUpdate):
    """Only the fields sent are changed; at least one is required, none may be null."""

    examples = (
        {"name": "Rae"},
        {"backstory": "Grew up by the sea."},
    )

    name: AvatarName | None = None
    personality: PersonalityType | None = None
    backstory: Backstory | None = None


class PersonaUpdateRequest(PartialUpdate):
    """The persona switch: a PATCH of `personality` alone, written as its `.value`."""

    examples = ({"personality": "witty"},)

    personality: PersonalityType


class AvatarRead(RowModel):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    personality: PersonalityType
    backstory: str
    version: int = Field(description="Bumped on every change; also sent as the ETag.")
    created_at: datetime
    updated_at: datetime
    image_path: str | None = Field(
        default=None,
        description="Storage folder of the avatar's image (GET /avatars/me/image for its URLs); null: none.",
    )


class AvatarImage(BaseModel):
    """Where to fetch the avatar's image: signed URLs, one per size, valid `expires_in` s."""

    image_path: str
    urls: dict[str, str] = Field(description='By size in pixels ("512", "128"): square WebP images.')
    expires_in: int = Field(description="Seconds the URLs stay valid.")


class AvatarVersion(RowModel):
    """One version of the avatar, as `avatar_history` recorded it (whoever wrote it)."""

    avatar_id: uuid.UUID
    user_id: uuid.UUID
    version: int = Field(description="The avatar's version; assistant messages record it as persona_version.")
    name: str
    personality: PersonalityType
    backstory: str
    changed_at: datetime


class AvatarHistoryPage(BaseModel):
    items: list[AvatarVersion] = Field(description="Newest version first.")
    next_cursor: NextCursor


# --- character cards (avatars/card.py reads and writes them) ----------------------------------


class _CardModel(BaseModel):
    """Part of a character card: the fields the spec names are checked (strictly: no
    conversions); any other field is kept as the card had it."""

    model_config = ConfigDict(extra="allow", strict=True)


class CardAsset(_CardModel):
    """A V3 asset: `uri` is a URL, `embeded://<path>`, `ccdefault:` (the PNG's own image) or a
    data URI."""

    type: str
    uri: str
    name: str
    ext: str


class CardDataV2(_CardModel):
    """A Character Card V2's `data` (malfoy/character-card-spec-v2). Fields left out are
    read as empty; a field sent as null is read as left out."""

    name: str = Field(
        min_length=1, max_length=NAME_MAX, pattern=NOT_BLANK, description="Trimmed, 1-80 characters."
    )
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = Field(default_factory=list)
    character_book: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)


class CardDataV3(CardDataV2):
    """A Character Card V3's `data` (kwaroran/character-card-spec-v3): V2's fields and these."""

    assets: list[CardAsset] | None = None
    nickname: str | None = None
    creator_notes_multilingual: dict[str, str] | None = None
    source: list[str] | None = None
    group_only_greetings: list[str] = Field(default_factory=list)
    creation_date: int | float | None = Field(default=None, description="Unix time, seconds.")
    modification_date: int | float | None = Field(default=None, description="Unix time, seconds.")


class CharacterCardV2(_CardModel):
    spec: Literal["chara_card_v2"]
    spec_version: str = Field(pattern=r"^2\.", description='"2.0"')
    data: CardDataV2


class CharacterCardV3(_CardModel):
    spec: Literal["chara_card_v3"]
    spec_version: str = Field(pattern=r"^3\.", description='"3.0"')
    data: CardDataV3


CharacterCard = Annotated[CharacterCardV2 | CharacterCardV3, Field(discriminator="spec")]
