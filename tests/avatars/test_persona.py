"""One list of personalities: the API's enum, what each one's traits are, and the
Postgres enum the rows hold, all the same values in the same order."""

from __future__ import annotations

import asyncpg

from avatar_chat.avatars.persona import TRAITS, PersonalityType, traits_of
from avatar_chat.chat.prompt import system_prompt
from avatar_chat.llm.base import ChatRequest, PromptMessage
from avatar_chat.llm.offline import offline_reply
from tests.support.factories import avatar_snapshot


async def test_the_database_enum_holds_the_apis_personalities_in_order(owner: asyncpg.Connection) -> None:
    labels = await owner.fetchval("select enum_range(null::public.personality_type)::text[]")
    assert labels == [p.value for p in PersonalityType]


def test_every_personality_has_its_traits_and_they_reach_the_prompt_and_the_offline_reply() -> None:
    assert list(TRAITS) == list(PersonalityType)
    for personality in PersonalityType:
        avatar = avatar_snapshot(personality=personality.value)
        assert TRAITS[personality] in system_prompt(avatar, "assistant")
        request = ChatRequest(avatar=avatar, mode="assistant", messages=(PromptMessage("user", "hi"),))
        assert TRAITS[personality] in offline_reply(request)


def test_a_personality_this_build_does_not_know_is_described_by_its_name() -> None:
    assert traits_of("grumpy") == "grumpy"
