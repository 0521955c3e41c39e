"""The object store this deployment uses (STORAGE_BACKEND)."""

from __future__ import annotations

from supabase import AsyncClient

from avatar_chat.core.settings import Settings, StorageBackend
from avatar_chat.storage.base import ObjectStore
from avatar_chat.storage.local import LocalObjectStore
from avatar_chat.storage.supabase import SupabaseObjectStore


async def create_store(settings: Settings, service_client: AsyncClient | None) -> ObjectStore:
    if settings.resolved_storage_backend is StorageBackend.supabase:
        assert service_client is not None  # settings validation requires URL and key
        return SupabaseObjectStore(service_client, settings.storage_bucket)
    return await LocalObjectStore.open(settings.data_dir / "storage", settings.storage_bucket)
