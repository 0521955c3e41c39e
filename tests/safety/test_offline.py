"""The offline moderator: phrases it must catch, and the everyday near-misses it must not."""

from __future__ import annotations

import pytest

from avatar_chat.safety.offline import CATEGORIES, CONTEXT_CHARS, RULES, OfflineModerator, classify, normalize

SELF_HARM_INTENT = [
    "I want to kill myself",
    "I'm going to end my life",
    "I\u2019m going to end my life tonight",
    "I've been cutting myself",
    "thinking about suicide",
    "I don't want to live anymore",
    "I dont want to live.",
    "i don't want to be alive",
    "I feel suicidal",
    "honestly I'm so suicidal lately",
    "I want to die",
    "I just wanna die",
    "I wish I was dead",
    "everyone would be better off dead without me, me included",
    "I have nothing left to live for",
    "there's no reason to live",
    "I wish I had never been born",
    "I'm going to take all my pills",
    "I'm planning to overdose",
    "I want to hurt myself again",
    "I keep burning myself with a lighter",
    "I'm going to end it all",
    "I've been considering suicide",
    "I want to jump off the bridge",
    "KILL MYSELF",
]
SELF_HARM_INSTRUCTIONS = [
    "how do I kill myself",
    "what's the most painless way to end my life",
    "best way to commit suicide",
    "how to overdose",
]
SELF_HARM_MENTION = [
    "my friend self-harms",
    "she was suicidal last year",
    "he killed himself in 2019",
    "they found a suicide note",
]
SEXUAL = [
    "let's have sex",
    "can we have sex tonight?",
    "I want you to fuck me",
    "I want to fuck you",
    "send me nudes",
    "send me naked pics",
    "touch my dick",
    "I'm so horny",
    "I want to make love to you",
    "talk dirty to me",
    "describe a blowjob",
    "fuck me harder",
    "show me porn",
    "will you get naked for me",
]
NEAR_MISSES = [
    "this deadline is killing me",
    "I could die laughing",
    "my phone battery is dead",
    "this is a killer app",
    "cut the onions into rings",
    "I'm dying to see the movie",
    "suicide squad is a film",
    "I'm thinking about Suicide Squad tonight",
    "the suicide doors on that car are cool",
    "I don't want to live in London",
    "I was cutting myself a slice of cake",
    "I'm burning myself out at work",
    "I cut myself shaving",
    "I hurt myself at the gym",
    "I'd kill myself laughing",
    "I'm killing myself trying to finish this",
    "I want to die of embarrassment",
    "I want to die happy and old",
    "don't take my life savings",
    "sex education at school",
    "what sex is your cat?",
    "food porn on instagram",
    "fuck this deadline",
    "I love you, good night",
    "the dead sea is salty",
    "my grandfather died last year",
    "the plant needs more light or it will die",
    "let's kill some time before the show",
    "I'd love to see it come to life",
    "how do I kill a python process",
    "Give the cat a scratch behind the ears",
    "",
]


@pytest.mark.parametrize("text", SELF_HARM_INTENT)
def test_self_harm_intent_is_caught(text: str) -> None:
    assert {"self-harm", "self-harm/intent"} <= classify(text)


@pytest.mark.parametrize("text", SELF_HARM_INSTRUCTIONS)
def test_self_harm_instructions_are_caught(text: str) -> None:
    assert {"self-harm", "self-harm/instructions"} <= classify(text)


@pytest.mark.parametrize("text", SELF_HARM_MENTION)
def test_self_harm_in_the_third_person_is_self_harm_without_intent(text: str) -> None:
    assert classify(text) == {"self-harm"}


@pytest.mark.parametrize("text", SEXUAL)
def test_sexual_requests_are_caught(text: str) -> None:
    assert classify(text) == {"sexual"}


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_flagged(text: str) -> None:
    assert classify(text) == frozenset()


def test_a_phrase_inside_a_long_text_is_caught() -> None:
    text = "We talked about the weather and work. " * 30 + "Honestly, I want to kill myself. " + "Ok. " * 30
    assert "self-harm/intent" in classify(text)


async def test_check_scores_every_category() -> None:
    moderator = OfflineModerator()
    flagged = await moderator.check("I've been cutting myself")
    assert flagged.flagged
    assert flagged.provider == "offline"
    assert flagged.flagged_categories == {"self-harm", "self-harm/intent"}
    assert flagged.categories == {
        "self-harm": 1.0,
        "self-harm/intent": 1.0,
        "self-harm/instructions": 0.0,
        "sexual": 0.0,
    }
    clean = await moderator.check("this deadline is killing me")
    assert not clean.flagged
    assert clean.flagged_categories == frozenset()
    assert set(clean.categories) == set(CATEGORIES)
    assert not any(clean.categories.values())
    await moderator.aclose()


@pytest.mark.parametrize(
    "text", SELF_HARM_INTENT + SELF_HARM_INSTRUCTIONS + SELF_HARM_MENTION + SEXUAL + NEAR_MISSES
)
def test_a_rule_that_matches_has_its_key_word_in_the_text(text: str) -> None:
    """The key words only skip work: never a regex that would have matched."""
    normalized = " ".join(text.lower().replace("\u2019", "'").split())
    for _categories, keywords, pattern in RULES:
        if pattern.search(normalized):
            assert any(keyword in normalized for keyword in keywords), pattern.pattern


@pytest.mark.parametrize("text", SELF_HARM_INTENT + SELF_HARM_INSTRUCTIONS + SELF_HARM_MENTION + SEXUAL)
def test_every_rule_matches_a_short_phrase(text: str) -> None:
    """ReplyCheck reads a streaming reply in parts overlapping by CONTEXT_CHARS: a rule must
    match phrases well within that (40 characters here, with room for longer words)."""
    normalized = normalize(text)
    spans = [m.end() - m.start() for _, _, pattern in RULES if (m := pattern.search(normalized))]
    assert spans and max(spans) <= 40 < CONTEXT_CHARS
