"""Pick the provider from the settings."""

from __future__ import annotations

from app.core.settings import LLMProviderName, Settings
from app.llm.base import LLMProvider
from app.llm.offline import OfflineProvider


def create_provider(settings: Settings) -> LLMProvider:
    if settings.resolved_llm_provider is LLMProviderName.openai:
        from app.llm.openai_provider import OpenAIProvider  # the SDK is only loaded when used

        return OpenAIProvider(settings)
    return OfflineProvider(chunk_delay_s=settings.offline_llm_chunk_delay_ms / 1000)
