"""Avatar payloads: Create / Update / Read, and the persona switch."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

NAME_MAX = 80
BACKSTORY_MAX = 4000

AvatarName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX)]
Backstory = Annotated[str, StringConstraints(max_length=BACKSTORY_MAX)]


class PersonalityType(StrEnum):
    """How the avatar talks. Stored as `.value` (Postgres enum `personality_type`)."""

    friendly = "friendly"
    professional = "professional"
    playful = "playful"
    caring = "caring"
    witty = "witty"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AvatarCreate(_Strict):
    name: AvatarName
    personality: PersonalityType = PersonalityType.friendly
    backstory: Backstory = ""


class AvatarUpdate(_Strict):
    """Only the fields sent are changed; at least one is required, none may be null."""

    name: AvatarName | None = None
    personality: PersonalityType | None = None
    backstory: Backstory | None = None

    @model_validator(mode="after")
    def _some_non_null_field(self) -> AvatarUpdate:
        if not self.model_fields_set:
            raise ValueError("send at least one of: name, personality, backstory")
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"may not be null: {', '.join(sorted(nulls))}")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class PersonaUpdateRequest(_Strict):
    personality: PersonalityType

    def changes(self) -> dict[str, Any]:
        return {"personality": self.personality.value}


class AvatarRead(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    personality: PersonalityType
    backstory: str
    version: int = Field(description="Bumped on every change; also sent as the ETag.")
    created_at: datetime
    updated_at: datetime
