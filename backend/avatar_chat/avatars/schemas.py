"""Avatar payloads: Create / Update / Read, the persona switch, and the persona history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from avatar_chat.avatars.persona import PersonalityType
from avatar_chat.core.schemas import NextCursor, PartialUpdate, RowModel, StrictModel

NAME_MAX = 80
BACKSTORY_MAX = 4000
HISTORY_PAGE_MAX = 100
# Versions in paths and cursors: the integers every JSON client holds exactly.
VERSION_MAX = 2**53

AvatarName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX)]
Backstory = Annotated[str, StringConstraints(max_length=BACKSTORY_MAX)]


class AvatarCreate(StrictModel):
    name: AvatarName
    personality: PersonalityType = PersonalityType.friendly
    backstory: Backstory = ""


class AvatarUpdate(PartialUpdate):
    """Only the fields sent are changed; at least one is required, none may be null."""

    name: AvatarName | None = None
    personality: PersonalityType | None = None
    backstory: Backstory | None = None


class PersonaUpdateRequest(PartialUpdate):
    """The persona switch: a PATCH of `personality` alone, written as its `.value`."""

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
