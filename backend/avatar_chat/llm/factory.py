"""Pick the provider from the settings."""

from __future__ import annotations

from avatar_chat.core.settings import LLMProviderName, Settings
from avatar_chat.llm.base import LLMProvider
from avatar_chat.llm.offline import OfflineProvider


def create_provider(settings: Settings) -> LLMProvider:
    if settings.resolved_llm_provider is LLMProviderName.openai:
        from avatar_chat.llm.openai_provider import OpenAIProvider  # the SDK is only loaded when used

        return OpenAIProvider(settings)
    return OfflineProvider(chunk_delay_s=settings.offline_llm_chunk_delay_ms / 1000)
