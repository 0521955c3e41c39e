"""The persona a chat turn is generated with: an immutable snapshot of the avatar row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from avatar_chat.core.database import Record


@dataclass(frozen=True, slots=True)
class AvatarSnapshot:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    personality: str
    backstory: str
    version: int

    @classmethod
    def from_row(cls, row: Record) -> AvatarSnapshot:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            personality=row["personality"],
            backstory=row["backstory"],
            version=row["version"],
        )
