"""Deleting an account: the user's Storage objects, then the user (Supabase Auth's admin
API, or locally the auth.users row), whose deletion cascades to every table, then the
objects once more.

In that order, so that every failure leaves a state a retry completes: until the user is
deleted their token still works, and DELETE /me asks nothing of the database, so a retry
also succeeds (204) once everything is gone. The second sweep takes what an upload racing
the first one wrote and committed before the user went (the cascade removed its row, not
its objects); an upload committing after that fails (401 user_not_found) and removes its
own objects."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from supabase import AsyncClient
from supabase_auth.errors import AuthApiError, AuthError

from avatar_chat.accounts import repository
from avatar_chat.cache.store import SessionStore
from avatar_chat.core.claims import Claims
from avatar_chat.core.database import Database
from avatar_chat.core.errors import ServiceUnavailable
from avatar_chat.storage.base import ObjectStore

log = logging.getLogger(__name__)


class AccountService:
    def __init__(
        self,
        db: Database,
        store: SessionStore[Any, Any],
        images: ObjectStore,
        service_client: AsyncClient | None,
    ) -> None:
        self._db = db
        self._store = store
        self._images = images
        self._service_client = service_client

    async def delete(self, user: Claims) -> None:
        """Idempotent: deleting an account that is already gone succeeds."""
        await self._remove_objects(user.sub)
        await self._delete_user(user.sub)
        await self._remove_objects(user.sub)
        await self._store.clear_avatar_cache(user.sub)

    async def _remove_objects(self, user_id: uuid.UUID) -> None:
        await self._images.remove(await self._images.list_folder(str(user_id)))

    async def _delete_user(self, user_id: uuid.UUID) -> None:
        if self._service_client is None:
            await repository.delete_auth_user(self._db, user_id)
            return
        try:
            await self._service_client.auth.admin.delete_user(str(user_id))
        except AuthApiError as exc:
            # Only Auth's own "user_not_found" means it is gone (a gateway's 404 has no code).
            if exc.status == 404 and exc.code == "user_not_found":
                return  # already deleted: what a retry finds
            log.error("Supabase Auth refused to delete user %s: %s %s", user_id, exc.status, exc.code)
            raise _auth_unavailable() from exc
        except AuthError as exc:
            log.warning("Supabase Auth unreachable deleting user %s: %s", user_id, exc)
            raise _auth_unavailable() from exc


def _auth_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("Supabase Auth is unavailable; retry shortly.", code="auth_unavailable")
