"""Reading an archive someone sent (POST /me/import), which may be hostile: every member's
name, kind and size are checked from the central directory before anything is read, and
each read is bounded again (a header may lie); JSON is parsed into the archive's models.

Refusals (422): `archive_unsafe` (a path that climbs or is absolute, a link, a name twice,
a member or a total too large, a compression ratio only a zip bomb has), `archive_invalid`
(not a zip, a file this format does not have, malformed or schema-invalid JSON, a file
named for one conversation holding another), `archive_version_unsupported`.
Runs in a thread (asyncio.to_thread): all of it is CPU and memory, bounded by the limits."""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from avatar_chat.core.errors import ValidationFailed
from avatar_chat.portability.schemas import VERSION, AvatarFile, ConversationFile, Manifest, UsageFile

M = TypeVar("M", bound=BaseModel)

# Text compresses up to ~10-20x; past this only a bomb does.
_MAX_RATIO: Final = 200
_MAX_MEMBERS: Final = 100_000
_CONVERSATION: Final = re.compile(
    r"conversations/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json"
)
_KNOWN: Final = re.compile(
    r"README(\.md)?|export\.json|avatar\.json|avatar\.webp|usage\.json|schemas/[a-z]+\.schema\.json"
)


@dataclass(frozen=True, slots=True)
class Limits:
    member_bytes: int  # the largest file once decompressed
    total_bytes: int  # all of them together, decompressed


def unsafe(message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(message, code="archive_unsafe", details=details or None)


def invalid(message: str, **details: Any) -> ValidationFailed:
    return ValidationFailed(message, code="archive_invalid", details=details or None)


class Archive:
    """An archive whose directory was checked; its files read on demand."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise invalid("This is not a zip archive.") from exc
        self._limits = limits
        if len(infos) > _MAX_MEMBERS:
            raise unsafe(f"The archive has more than {_MAX_MEMBERS} files.")
        self._files: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = info.filename
            _check_name(name)
            if name in self._files:
                raise unsafe("The archive holds a file twice.", file=name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise unsafe("The archive holds a link.", file=name)
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise invalid("The archive holds an encrypted file.", file=name)
            if info.file_size > limits.member_bytes:
                raise unsafe(f"A file is larger than {limits.member_bytes} bytes.", file=name)
            if info.file_size > _MAX_RATIO * max(info.compress_size, 1) and info.file_size > 1024 * 1024:
                raise unsafe("A file is compressed more than any real data is.", file=name)
            total += info.file_size
            if total > limits.total_bytes:
                raise unsafe(f"The archive holds more than {limits.total_bytes} bytes.")
            if not (_KNOWN.fullmatch(name) or _CONVERSATION.fullmatch(name)):
                raise invalid("The archive holds a file this format does not have.", file=name)
            self._files[name] = info
        if "export.json" not in self._files:
            raise invalid("The archive has no export.json: it is not an avatar chat export.")

    def read(self, name: str) -> bytes:
        info = self._files[name]
        with self._zip.open(info) as member:
            data = member.read(self._limits.member_bytes + 1)
        if len(data) > self._limits.member_bytes:  # the directory understated it
            raise unsafe(f"A file is larger than {self._limits.member_bytes} bytes.", file=name)
        return data

    def has(self, name: str) -> bool:
        return name in self._files

    def conversation_files(self) -> list[str]:
        return sorted(name for name in self._files if _CONVERSATION.fullmatch(name))

    def manifest(self) -> Manifest:
        data = self.read("export.json")
        try:
            head = json.loads(data)
        except ValueError as exc:
            raise invalid("export.json is not JSON.", file="export.json") from exc
        if not isinstance(head, dict) or head.get("format") != "avatar-chat-export":
            raise invalid("export.json does not describe an avatar chat export.", file="export.json")
        if head.get("version") != VERSION:
            raise ValidationFailed(
                f"This archive is of format version {head.get('version')!r};"
                f" this server reads version {VERSION}.",
                code="archive_version_unsupported",
                details={"version": head.get("version"), "supported": [VERSION]},
            )
        return _parse(Manifest, data, "export.json")

    def avatar(self) -> tuple[AvatarFile, str] | None:
        if not self.has("avatar.json"):
            return None
        data = self.read("avatar.json")
        return _parse(AvatarFile, data, "avatar.json"), data.decode()

    def conversation(self, name: str) -> str:
        """The file's JSON text, checked against the model (and its name against its id)."""
        data = self.read(name)
        parsed = _parse(ConversationFile, data, name)
        match = _CONVERSATION.fullmatch(name)
        assert match is not None
        if str(parsed.id) != match[1]:
            raise invalid("A conversation's file is named for another conversation.", file=name)
        return data.decode()

    def usage(self) -> tuple[int, str] | None:
        if not self.has("usage.json"):
            return None
        data = self.read("usage.json")
        return len(_parse(UsageFile, data, "usage.json").records), data.decode()


def _check_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(part in (".", "..") for part in parts)
        or len(name) > 200
    ):
        raise unsafe(
            "The archive holds a file whose path leaves its folder or is not plain.", file=name[:200]
        )


def _parse(model: type[M], data: bytes, name: str) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise invalid(
            f"{name} does not match its schema: {first['msg']} at {where or 'the top'}.",
            file=name,
            at=where,
            problem=first["msg"],
        ) from None
