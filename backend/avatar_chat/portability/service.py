"""Exporting an account as one archive, as it is read (docs/portability.md).

Admission first, before the answer starts (so a refusal is a plain 4xx/5xx): this worker
runs at most EXPORTS_PER_WORKER exports at once (503 busy beyond), and the user takes the
export lease in Postgres (429 export_in_progress while another of theirs runs on any
worker, export_limited past EXPORTS_PER_DAY). Then one read-only repeatable-read
transaction as the user reads everything in pages and the archive goes out as it is
written: memory holds a page and what the compressor has not flushed, whatever the
account's size. A client that goes away ends it (the transaction rolls back, the lease
ends); so does EXPORT_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Connection, Database
from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.core.settings import Settings
from avatar_chat.portability import repository
from avatar_chat.portability.archive import ZipStream
from avatar_chat.portability.reading import Archive, Limits
from avatar_chat.portability.schemas import FILE_MODELS, FORMAT, VERSION, ImportResult
from avatar_chat.storage.base import ObjectMissing, ObjectStore

log = logging.getLogger(__name__)

# Rows per page (a page's JSON is the most an export holds at once), and how much of the
# archive is gathered before it is sent.
_PAGE: Final = 500
_SEND_AFTER_BYTES: Final = 64 * 1024
# The avatar image an archive holds: the largest rendition (avatars/images.py).
_IMAGE_FILE: Final = "512.webp"


def readme() -> str:
    return resources.files("avatar_chat.portability").joinpath("README.export.md").read_text("utf-8")


def json_schema_files() -> dict[str, str]:
    """schemas/<file>.schema.json as shipped in the package (json_schemas/)."""
    folder = resources.files("avatar_chat.portability").joinpath("json_schemas")
    return {name: folder.joinpath(f"{name}.schema.json").read_text("utf-8") for name in FILE_MODELS}


class PortabilityService:
    def __init__(
        self, db: Database, store: ObjectStore, settings: Settings, *, worker_id: Callable[[], int | None]
    ) -> None:
        self._db = db
        self._store = store
        self._worker_id = worker_id
        self._per_worker = settings.exports_per_worker
        self._per_day = settings.exports_per_day
        self._timeout_s = settings.export_timeout_s
        self._running = 0
        self._import_limits = Limits(
            member_bytes=settings.import_max_file_bytes, total_bytes=settings.import_max_unpacked_bytes
        )
        self._importing = 0
        self._import_timeout_s = settings.import_timeout_s

    @property
    def exports_running(self) -> int:
        return self._running

    async def export(self, user: Claims) -> AsyncIterator[bytes]:
        """Admit the export (raises its refusals), then the archive's bytes as they are made."""
        if self._running >= self._per_worker:
            raise ServiceUnavailable(
                "This server is busy making other exports; retry shortly.", code="busy", retry_after_s=5
            )
        self._running += 1
        try:
            token = await repository.begin_export(
                self._db,
                user,
                worker_id=self._worker_id(),
                lease_s=self._timeout_s,
                per_day=self._per_day,
            )
        except BaseException:
            self._running -= 1
            raise
        return self._archive(user, token)

    async def import_archive(self, user: Claims, data: bytes, *, replace_avatar: bool) -> ImportResult:
        """Take an archive into the account, all of it or nothing, once per archive.

        One import at a time per worker (each may hold the archive, a file of it and its
        parse in memory: 503 busy beyond). The archive is checked whole before the
        transaction opens; each conversation is parsed and written one after the other."""
        if self._importing >= 1:
            raise ServiceUnavailable(
                "This server is busy importing another archive; retry shortly.", code="busy", retry_after_s=5
            )
        self._importing += 1
        try:
            sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            archive = await asyncio.to_thread(Archive, data, self._import_limits)
            await asyncio.to_thread(archive.manifest)
            avatar = await asyncio.to_thread(archive.avatar)
            usage = await asyncio.to_thread(archive.usage)
            deadline = self._import_timeout_s
            async with asyncio.timeout(deadline), self._db.connection() as conn, conn.transaction():
                earlier = await repository.begin_import(conn, user, sha256)
                if earlier is not None:
                    return ImportResult.model_validate({**earlier, "already_imported": True})
                outcome = "none"
                if avatar is not None:
                    outcome = await repository.import_avatar(
                        conn, user, avatar[1], replace=replace_avatar, within_s=deadline
                    )
                messages = 0
                names = archive.conversation_files()
                for name in names:
                    text = await asyncio.to_thread(archive.conversation, name)
                    messages += await repository.import_conversation(conn, user, text, within_s=deadline)
                records = (
                    0
                    if usage is None
                    else await repository.import_usage(conn, user, usage[1], within_s=deadline)
                )
                result = {
                    "archive_sha256": sha256,
                    "conversations": len(names),
                    "messages": messages,
                    "usage_records": records,
                    "avatar": outcome,
                }
                imported_at = await repository.finish_import(conn, user, sha256, result)
            return ImportResult.model_validate(
                {**result, "imported_at": imported_at, "already_imported": False}
            )
        finally:
            self._importing -= 1

    async def _archive(self, user: Claims, token: uuid.UUID) -> AsyncIterator[bytes]:
        try:
            async with asyncio.timeout(self._timeout_s), self._db.as_user(user, snapshot=True) as conn:
                async for chunk in _Writer(conn, self._store, user).chunks():
                    yield chunk
        finally:
            self._running -= 1
            # The lease ends whatever happened (a client gone, a timeout); shielded, so a
            # cancelled answer still releases it.
            try:
                await asyncio.shield(repository.end_export(self._db, user_id=user.sub, token=token))
            except Exception:
                log.warning("could not end the export lease of a user; it runs out by itself")


class _Writer:
    """One archive: entries written in order, handed out as they fill."""

    def __init__(self, conn: Connection, store: ObjectStore, user: Claims) -> None:
        self._conn = conn
        self._store = store
        self._user = user
        self._zip = ZipStream()
        self._counts = {"conversations": 0, "messages": 0, "usage_records": 0, "avatar_versions": 0}
        self._image: str | None = None  # the avatar image's file in the archive

    async def chunks(self) -> AsyncIterator[bytes]:
        self._zip.entry("README.md", readme())
        yield self._zip.take()  # the first bytes at once, whatever the account's size
        async for chunk in self._avatar():
            yield chunk
        async for chunk in self._conversations():
            yield chunk
        async for chunk in self._usage():
            yield chunk
        for name, text in json_schema_files().items():
            self._zip.entry(f"schemas/{name}.schema.json", text)
        self._zip.entry("export.json", self._manifest())
        self._zip.close()
        yield self._zip.take()

    def _ready(self) -> bytes | None:
        return self._zip.take() if self._zip.pending >= _SEND_AFTER_BYTES else None

    async def _avatar(self) -> AsyncIterator[bytes]:
        found = await repository.avatar(self._conn)
        if found is None:
            return
        head, image_path = found
        self._zip.begin("avatar.json")
        self._zip.write(head[:-1] + ',"history":[')
        after, first = 0, True
        while page := await repository.avatar_history(self._conn, after=after, limit=_PAGE):
            for version, entry in page:
                self._zip.write(entry if first else "," + entry)
                first = False
                after = version
                self._counts["avatar_versions"] += 1
            if (ready := self._ready()) is not None:
                yield ready
        self._zip.write("]}")
        self._zip.end()
        if image_path is not None:
            try:
                data = await self._store.download(f"{image_path}/{_IMAGE_FILE}")
            except ObjectMissing:
                log.warning("an exported avatar's image is missing from storage")
            else:
                self._zip.entry("avatar.webp", data)
                self._image = "avatar.webp"
        yield self._zip.take()

    async def _conversations(self) -> AsyncIterator[bytes]:
        after: tuple[datetime, uuid.UUID] | None = None
        while page := await repository.conversations(self._conn, after=after, limit=_PAGE):
            for created_at, conversation_id, head in page:
                after = (created_at, conversation_id)
                self._counts["conversations"] += 1
                self._zip.begin(f"conversations/{conversation_id}.json")
                self._zip.write(head[:-1] + ',"messages":[')
                seq, first = 0, True
                while messages := await repository.messages(
                    self._conn, conversation_id, after=seq, limit=_PAGE
                ):
                    for _, entry in messages:
                        self._zip.write(entry if first else "," + entry)
                        first = False
                    seq = messages[-1][0]
                    self._counts["messages"] += len(messages)
                    if (ready := self._ready()) is not None:
                        yield ready
                self._zip.write("]}")
                self._zip.end()
                if (ready := self._ready()) is not None:
                    yield ready

    async def _usage(self) -> AsyncIterator[bytes]:
        self._zip.begin("usage.json")
        self._zip.write('{"records":[')
        after: repository.UsageKey | None = None
        first = True
        while page := await repository.usage_records(self._conn, after=after, limit=_PAGE * 4):
            for _, entry in page:
                self._zip.write(entry if first else "," + entry)
                first = False
            after = page[-1][0]
            self._counts["usage_records"] += len(page)
            if (ready := self._ready()) is not None:
                yield ready
        self._zip.write("]}")
        self._zip.end()

    def _manifest(self) -> str:
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": datetime.now(UTC).isoformat(),
            "user": {"id": str(self._user.sub), "email": self._user.email},
            "counts": self._counts,
            "avatar_image": self._image,
        }
        return json.dumps(manifest, indent=2)
