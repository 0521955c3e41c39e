"""The `supabase` client for Supabase's HTTP services (Storage, the Auth admin API), made
once per worker with the service-role key, on the app's shared HTTP connection pool."""

from __future__ import annotations

import httpx
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from avatar_chat.core.settings import Settings


async def create_service_client(settings: Settings, http: httpx.AsyncClient) -> AsyncClient | None:
    """None unless SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both set. No session:
    the service-role key is the credential of every call, and it never leaves the server."""
    if not settings.has_service_role:
        return None
    assert settings.supabase_url is not None and settings.supabase_service_role_key is not None
    options = AsyncClientOptions(auto_refresh_token=False, persist_session=False, httpx_client=http)
    return await acreate_client(
        settings.supabase_url, settings.supabase_service_role_key.get_secret_value(), options=options
    )
