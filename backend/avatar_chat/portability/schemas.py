"""The archive's files, as models: what GET /me/export writes and POST /me/import accepts.
Their JSON Schemas ship in the package (json_schemas/) and in every archive (schemas/);
tests/portability/test_formats.py keeps the files and these models the same.

Format version 1. A later version may add fields; an importer of version 1 refuses an
archive of another version (`archive_version_unsupported`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from avatar_chat.avatars.persona import PersonalityType
from avatar_chat.conversations.schemas import ConversationMode, MessageRole, MessageStatus, NoticeKind

FORMAT: Literal["avatar-chat-export"] = "avatar-chat-export"
VERSION: Literal[1] = 1

Count = Annotated[int, Field(ge=0, le=1_000_000_000)]
Text = Annotated[str, Field(max_length=32_000)]


class _File(BaseModel):
    # Unknown fields are refused: an archive says exactly what it holds.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExportedUser(_File):
    id: uuid.UUID
    email: str | None = Field(default=None, max_length=320)


class Counts(_File):
    conversations: Count
    messages: Count
    usage_records: Count
    avatar_versions: Count


class Manifest(_File):
    """export.json: what the archive is, when it was made, whose it is, what it holds."""

    format: Literal["avatar-chat-export"]
    version: Literal[1]
    exported_at: datetime
    user: ExportedUser
    counts: Counts
    avatar_image: str | None = Field(default=None, description="The avatar image's file in the archive.")


class AvatarVersion(_File):
    version: Annotated[int, Field(ge=1)]
    name: Annotated[str, Field(min_length=1, max_length=80)]
    personality: PersonalityType
    backstory: Annotated[str, Field(max_length=4000)]
    changed_at: datetime


class AvatarFile(_File):
    """avatar.json: the avatar as it is now, and every version it had (oldest first)."""

    id: uuid.UUID
    name: Annotated[str, Field(min_length=1, max_length=80)]
    personality: PersonalityType
    backstory: Annotated[str, Field(max_length=4000)]
    version: Annotated[int, Field(ge=1)]
    created_at: datetime
    updated_at: datetime
    card: dict[str, Any] | None = Field(
        default=None,
        description="The character card the avatar was made from, beyond its persona (GET /avatars/me/card).",
    )
    history: list[AvatarVersion]


UsageKind = Literal["reply", "summary", "moderation"]
UsageSource = Literal["provider", "estimate"]


class MessageUsage(_File):
    kind: UsageKind
    model: Annotated[str, Field(min_length=1, max_length=200)]
    plan: str | None = Field(default=None, max_length=40)
    calls: Annotated[int, Field(ge=1)]
    prompt_tokens: Count
    completion_tokens: Count
    source: UsageSource
    status: str | None = Field(default=None, max_length=20)
    created_at: datetime


class UsageRecord(MessageUsage):
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None


class UsageFile(_File):
    """usage.json: what every model call of the account cost (docs/usage.md)."""

    records: list[UsageRecord]


class MessageEntry(_File):
    id: uuid.UUID
    seq: Annotated[int, Field(ge=1)]
    role: MessageRole
    content: Text
    status: MessageStatus
    reply_to: uuid.UUID | None
    variant: Annotated[int, Field(ge=0, le=10_000)]
    is_current: bool
    persona_version: Annotated[int, Field(ge=1)] | None
    personality: PersonalityType | None
    notice_kind: NoticeKind | None
    error_code: str | None = Field(max_length=100)
    attempt: Annotated[int, Field(ge=1, le=1_000_000)]
    created_at: datetime
    updated_at: datetime
    usage: list[MessageUsage]


class Summary(_File):
    covers_upto_seq: Annotated[int, Field(ge=0)]
    content: Text
    updated_at: datetime


class ConversationFile(_File):
    """conversations/<id>.json: a conversation, its summary and every message in seq
    order, every alternative reply (variant, is_current) and notice included."""

    id: uuid.UUID
    title: str | None = Field(max_length=200)
    mode: ConversationMode
    created_at: datetime
    updated_at: datetime
    summary: Summary | None
    messages: list[MessageEntry]


# The JSON Schema of each file, by the file it describes (schemas/<key>.schema.json).
FILE_MODELS: dict[str, type[BaseModel]] = {
    "export": Manifest,
    "avatar": AvatarFile,
    "conversation": ConversationFile,
    "usage": UsageFile,
}


def json_schema(name: str) -> str:
    """The JSON Schema of a file (draft 2020-12, as pydantic writes it), as shipped."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **FILE_MODELS[name].model_json_schema(),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


class ImportResult(BaseModel):
    """What POST /me/import did (the same answer again for the same archive)."""

    archive_sha256: str = Field(description="The archive's SHA-256: an archive is imported once per account.")
    imported_at: datetime
    already_imported: bool = Field(
        description="True when this archive had been imported before: nothing changed."
    )
    conversations: int
    messages: int
    usage_records: int
    avatar: Literal["imported", "replaced", "kept", "none"] = Field(
        description="imported: the account had none; replaced: ?avatar=replace; kept: the account's own was "
        "kept; none: the archive has none."
    )
