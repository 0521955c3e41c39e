"""The persona: the personalities an avatar can have, and the immutable snapshot of the
avatar row a chat turn is generated with.

`PersonalityType` is the one list of personalities: the API validates against it and
declares it in OpenAPI (the web client reads it from there), `TRAITS` says how each
talks (what the prompt tells the model and the offline provider shows), and the
Postgres enum `public.personality_type` holds the same values (a test compares them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class PersonalityType(StrEnum):
    """How the avatar talks. Stored as `.value` (Postgres enum `personality_type`)."""

    friendly = "friendly"
    professional = "professional"
    playful = "playful"
    caring = "caring"
    witty = "witty"


TRAITS: Final[Mapping[PersonalityType, str]] = MappingProxyType(
    {
        PersonalityType.friendly: "warm, upbeat and approachable",
        PersonalityType.professional: "precise, courteous and to the point",
        PersonalityType.playful: "light-hearted, curious and fond of wordplay",
        PersonalityType.caring: "gentle, patient and supportive",
        PersonalityType.witty: "clever, quick and dryly humorous",
    }
)


def traits_of(personality: str) -> str:
    """How a personality talks; a value this build does not know (a row edited by hand
    to a newer enum value) is described by its own name."""
    try:
        return TRAITS[PersonalityType(personality)]
    except ValueError:
        return personality


@dataclass(frozen=True, slots=True)
class AvatarSnapshot:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    personality: str
    backstory: str
    version: int
