"""The persona a chat turn is generated with: an immutable snapshot of the avatar row."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AvatarSnapshot:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    personality: str
    backstory: str
    version: int
