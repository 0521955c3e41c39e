"""Avatar use cases. Every mutation invalidates this worker's SessionStore entry."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from functools import partial
from typing import Any

from avatar_chat.avatars import card_png, repository, schemas
from avatar_chat.avatars.card import SPEC_V3, card_of, encoded, read_json_card, v2_of
from avatar_chat.avatars.images import CONTENT_TYPE, SIZES, ImageDecodes, image_kind
from avatar_chat.cache.store import SessionStore
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database
from avatar_chat.core.errors import AppError, BadRequest, Conflict, NotFound
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.storage.base import ObjectStore

log = logging.getLogger(__name__)

_NO_AVATAR = "You have no avatar yet; create one with POST /avatars/me."


def _not_found() -> NotFound:
    return NotFound(_NO_AVATAR, code="avatar_not_found")


def _card_target_missing(replace: bool) -> AppError:
    """A card import with nothing to write to: no avatar to replace, or one already there."""
    if replace:
        return _not_found()
    return Conflict(
        "You already have an avatar; send the card with If-Match (its ETag) to replace it.",
        code="avatar_exists",
    )


# A history cursor: a version, 1 or more, in decimal digits (leading zeros allowed); the
# OpenAPI `pattern` and `maxLength` of `cursor` say exactly what decode_history_cursor takes.
HISTORY_CURSOR_MAX = 16
HISTORY_CURSOR_PATTERN = "^0*[1-9][0-9]*$"
_CURSOR = re.compile(HISTORY_CURSOR_PATTERN.strip("^$"))


def decode_history_cursor(cursor: str) -> int:
    """A history page's `next_cursor`: the version the next page continues below. Any
    version above the highest there can be (VERSION_MAX) reads from the newest."""
    if len(cursor) <= HISTORY_CURSOR_MAX and _CURSOR.fullmatch(cursor):
        return min(int(cursor), schemas.VERSION_MAX + 1)
    raise BadRequest("The cursor is not one this API issued.", code="invalid_cursor")


def image_files(folder: str) -> list[str]:
    """The objects of one avatar image, largest first."""
    return [f"{folder}/{size}.webp" for size in SIZES]


class AvatarService:
    def __init__(
        self,
        db: Database,
        store: SessionStore[Any, Any],
        images: ObjectStore,
        tasks: TaskTracker,
        *,
        signed_url_ttl_s: int,
        image_decodes_at_once: int,
    ) -> None:
        self._db = db
        self._store = store
        self._images = images
        self._tasks = tasks
        self._signed_url_ttl_s = signed_url_ttl_s
        self._decodes = ImageDecodes(image_decodes_at_once)

    def close(self) -> None:
        """Stop the image decode threads (a running decode finishes first)."""
        self._decodes.close()

    @property
    def image_decodes_running(self) -> int:
        return self._decodes.running

    async def create(self, user: Claims, data: schemas.AvatarCreate) -> schemas.AvatarRead:
        async with self._db.as_user(user) as conn:
            avatar = await repository.insert(
                conn, name=data.name, personality=data.personality.value, backstory=data.backstory
            )
        await self._store.clear_avatar_cache(user.sub)
        if avatar is None:
            raise Conflict("You already have an avatar.", code="avatar_exists")
        return avatar

    async def get(self, user: Claims) -> schemas.AvatarRead:
        async with self._db.as_user(user) as conn:
            avatar = await repository.get_mine(conn)
        if avatar is None:
            raise _not_found()
        return avatar

    async def update(
        self,
        user: Claims,
        data: schemas.AvatarUpdate | schemas.PersonaUpdateRequest,
        *,
        if_match: list[int] | None,
    ) -> schemas.AvatarRead:
        """One round trip; the answer is the row as committed."""
        try:
            avatar = await repository.update_mine(self._db, user, changes=data.changes(), if_match=if_match)
        finally:
            # Also on failure: whether or not it committed, the cache must not outlive it.
            await self._store.clear_avatar_cache(user.sub)
        if avatar is None:
            raise _not_found()
        return avatar

    async def history(self, user: Claims, *, limit: int, cursor: str | None) -> schemas.AvatarHistoryPage:
        """Every version of the user's avatar, newest first; empty without an avatar."""
        below = None if cursor is None else decode_history_cursor(cursor)
        async with self._db.as_user(user) as conn:
            rows = await repository.list_history(conn, limit=limit + 1, below=below)
        items = rows[:limit]
        next_cursor = str(items[-1].version) if len(rows) > limit else None
        return schemas.AvatarHistoryPage(items=items, next_cursor=next_cursor)

    async def restore(self, user: Claims, version: int, *, if_match: list[int] | None) -> schemas.AvatarRead:
        """A new version with the persona of `version`; one round trip, as `update`."""
        try:
            avatar = await repository.restore_mine(self._db, user, version=version, if_match=if_match)
        finally:
            # Also on failure: whether or not it committed, the cache must not outlive it.
            await self._store.clear_avatar_cache(user.sub)
        if avatar is None:
            raise _not_found()
        return avatar

    async def delete(self, user: Claims) -> None:
        async with self._db.as_user(user) as conn:
            deleted, image_path = await repository.delete_mine(conn)
        await self._store.clear_avatar_cache(user.sub)
        if not deleted:
            raise _not_found()
        self._remove_later(image_path)

    # --- the image ---------------------------------------------------------------------------

    async def set_image(self, user: Claims, data: bytes, *, if_match: list[int] | None) -> schemas.AvatarRead:
        """Normalise, store under a new folder, then point the avatar at it (one round
        trip). The previous image is removed only once that committed (G4); the new
        objects are removed again if the database refused the change. 429
        image_rate_limited over RATE_LIMIT_IMAGE_UPLOADS_PER_MINUTE, 503 busy while this
        worker already runs IMAGE_DECODES_PER_WORKER decodes."""

        # Fail before decoding or writing anything when the change would be refused anyway
        # (no avatar, a stale If-Match, a deleted user, over the upload rate), in one round
        # trip that counts this upload; the guarded write below still decides. Run once a
        # decode slot is held, so that an upload refused as busy is not counted.
        async def admit() -> None:
            if await repository.begin_image_upload_mine(self._db, user, if_match=if_match) is None:
                raise _not_found()

        image_kind(data)
        renditions = await self._decodes.normalise(data, admit=admit)
        folder = await self._upload(user, renditions)
        try:
            result = await self._set_image_path(user, folder, if_match)
        except AppError as exc:
            if exc.status_code < 500:  # refused: nothing points at the new objects
                self._remove_later(folder)
            # Else the outcome is unknown (the commit may have happened): leave them.
            raise
        if result is None:
            self._remove_later(folder)
            raise _not_found()
        avatar, previous = result
        self._remove_later(previous)
        return avatar

    async def _upload(self, user: Claims, renditions: list[bytes]) -> str:
        """The renditions stored under a new folder of the user's (removed again when an
        upload fails); the folder."""
        folder = f"{user.sub}/{uuid.uuid4().hex}"
        files = image_files(folder)
        try:
            # A task group: when one upload fails the other is cancelled before the
            # folder is removed, so no late write outlives the cleanup.
            async with asyncio.TaskGroup() as uploads:
                for file, rendition in zip(files, renditions, strict=True):
                    uploads.create_task(self._images.upload(file, rendition, CONTENT_TYPE))
        except BaseExceptionGroup as group:
            self._remove_later(folder)
            raise group.exceptions[0] from None
        except BaseException:
            self._remove_later(folder)
            raise
        return folder

    async def delete_image(self, user: Claims, *, if_match: list[int] | None) -> schemas.AvatarRead:
        """The avatar without an image (a new version; none if it had none)."""
        result = await self._set_image_path(user, None, if_match)
        if result is None:
            raise _not_found()
        avatar, previous = result
        self._remove_later(previous)
        return avatar

    async def image(self, user: Claims, *, base_url: str) -> schemas.AvatarImage:
        """Signed URLs of the avatar's image, valid STORAGE_SIGNED_URL_TTL_S."""
        avatar = await self.get(user)
        if avatar.image_path is None:
            raise NotFound(
                "Your avatar has no image; upload one with PUT /avatars/me/image.", code="image_not_found"
            )
        urls = await self._images.signed_urls(
            image_files(avatar.image_path), expires_in_s=self._signed_url_ttl_s, base_url=base_url
        )
        return schemas.AvatarImage(
            image_path=avatar.image_path,
            urls={str(size): url for size, url in zip(SIZES, urls, strict=True)},
            expires_in=self._signed_url_ttl_s,
        )

    # --- character cards (card.py: the mapping; card_png.py: the PNG) -------------------------

    async def card(self, user: Claims) -> tuple[schemas.AvatarRead, dict[str, Any]]:
        """The avatar and its character card (V2, or V3 when it came from a V3 card)."""
        async with self._db.as_user(user) as conn:
            found = await repository.get_card_mine(conn)
        if found is None:
            raise _not_found()
        avatar, kept = found
        return avatar, card_of(avatar.name, avatar.personality, avatar.backstory, kept)

    async def card_png(self, user: Claims) -> tuple[schemas.AvatarRead, bytes]:
        """The card in a PNG of the avatar's image (its 512-pixel rendition), or of a
        placeholder when it has none: a V2 card as `chara`; a V3 card as `ccv3`, and as V2
        in `chara` for older readers. Drawn on a decode thread (503 busy when none is free)."""
        avatar, card = await self.card(user)
        image = None
        if avatar.image_path is not None:
            image = await self._images.download(image_files(avatar.image_path)[0])
        cards = {"chara": encoded(card)}
        if card["spec"] == SPEC_V3:
            cards = {"chara": encoded(v2_of(card)), "ccv3": encoded(card)}
        png = await self._decodes.run(partial(card_png.render, name=avatar.name, cards=cards), image)
        return avatar, png

    async def import_card(
        self, user: Claims, body: bytes, *, png: bool, replace: bool, if_match: list[int] | None
    ) -> schemas.AvatarRead:
        """A new avatar from a character card (JSON, or a PNG with its card chunk), or with
        `replace` the user's avatar overwritten by one (If-Match honoured). The card is read
        and its image decoded before anything is written; the image (the PNG's, or a V3
        icon embedded as a data URI) is stored as PUT /avatars/me/image stores one, counted
        against the same rate. Without an image a replaced avatar keeps its own."""
        image: bytes | None
        if png:
            imported, image = await self._decodes.run(card_png.read_card, body)
        else:
            imported = await self._decodes.run(read_json_card, body)
            image = imported.icon
        folder = None
        if image is not None:

            async def admit() -> None:
                # Fail before decoding when the write would be refused anyway; counts the upload.
                has_avatar = await repository.begin_card_image_mine(
                    self._db, user, replace=replace, if_match=if_match
                )
                if has_avatar is not replace:
                    raise _card_target_missing(replace)

            folder = await self._upload(user, await self._decodes.normalise(image, admit=admit))
        try:
            result = await repository.write_card_mine(
                self._db,
                user,
                replace=replace,
                name=imported.name,
                personality=imported.personality.value,
                backstory=imported.backstory,
                card=imported.kept,
                image_path=folder,
                if_match=if_match,
            )
        except AppError as exc:
            if exc.status_code < 500:  # refused: nothing points at the new objects
                self._remove_later(folder)
            raise
        finally:
            await self._store.clear_avatar_cache(user.sub)
        if result is None:
            self._remove_later(folder)
            raise _card_target_missing(replace)
        avatar, previous = result
        self._remove_later(previous)
        return avatar

    async def _set_image_path(
        self, user: Claims, folder: str | None, if_match: list[int] | None
    ) -> tuple[schemas.AvatarRead, str | None] | None:
        try:
            return await repository.set_image_mine(self._db, user, image_path=folder, if_match=if_match)
        finally:
            await self._store.clear_avatar_cache(user.sub)

    def _remove_later(self, folder: str | None) -> None:
        """Remove an image's objects in the background (after the commit that let go of
        them); a failure leaves them behind, logged, and loses nothing a client sees."""
        if folder is not None:
            self._tasks.spawn(self._remove(folder), name="remove-image")

    async def _remove(self, folder: str) -> None:
        try:
            await self._images.remove(image_files(folder))
        except AppError as exc:
            log.warning("could not remove the image objects of %s: %s", folder, exc.code)
