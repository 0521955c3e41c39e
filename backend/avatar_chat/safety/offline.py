"""The offline moderator: no network, a small rule-based classifier, the default provider.

It looks for two things only, in English: self-harm and suicidal ideation (`self-harm`,
`self-harm/intent`, `self-harm/instructions`) and explicit sexual content or requests
(`sexual`). Every other category is left to a real model (`openai`, `llama-guard`).

How it decides: the text is lower-cased, curly apostrophes made straight and whitespace
collapsed (to single spaces: the rules are only ever run on such text); then each rule
(`RULES`, compiled once at import) is tried only when the text holds one of the rule's key
words (a plain substring test: most texts skip every regex). A match scores the rule's
categories 1.0; everything else scores 0.0.

- `self-harm/intent` (and `self-harm`): first-person intent or ideation. "kill myself"
  (not "...laughing", "...trying to", "...at work"), "unalive myself", cutting / hurting /
  harming / burning / starving myself when wanted, planned or habitual ("I've been cutting
  myself", "I want to hurt myself"; not "cutting myself a slice", "burning myself out"),
  "end / take my (own) life", "end it all", "I'm / I feel suicidal", thinking about /
  considering / planning / attempting suicide (not "Suicide Squad", "suicide mission",
  "suicide doors"), "I don't want to live / be alive / exist (anymore)" (not "...to live in
  London"), "I want to die" (not "...laughing", "...of embarrassment"), "wish I was dead",
  "better off dead", "nothing to live for", "no reason to live", "wish I'd never been born",
  wanting to overdose or "take all my pills", wanting to jump off a bridge or roof.
- `self-harm/instructions` (and `self-harm`): asking how to kill oneself, commit suicide,
  end one's life or overdose ("how do I...", "best / easiest / painless way to...").
- `self-harm` alone: the topic in the third person or in general: "self-harm",
  "self-injury", "suicidal", "suicide attempt / note", "killed himself".
- `sexual`: explicit requests and explicit vocabulary: asking for sex, to "fuck", "make
  love", sext or get naked ("let's...", "I want you to...", "can we..."), asking for nudes,
  touching or licking named genitals, explicit acts, and words that are only ever sexual
  ("blowjob", "porn" (not "food porn"), "masturbate", "orgasm", "horny", "sexting").

What it deliberately does not flag, because the words are everyday hyperbole: "this
deadline is killing me", "I could die laughing", "I'm dying to see the movie", "my phone
battery is dead", "killer app", "cut the onions", "Suicide Squad is a film", "sex
education". tests/safety/test_offline.py holds both lists; a phrase added to either list
is the way to change a rule.

It is a safety net, not a classifier of record: it misses paraphrases a model catches, and
does not read other languages. Cost (CPython 3.11, one core of the development machine):
~20 us for a 1,000-character reply, ~5 us for a chat message of 230 characters, ~1 us
for a short one: the key words are found in one pass (an Aho-Corasick automaton), then
only the rules whose key words are there run, and the normalisation. A regex that runs
costs ~13-30 us per 1,000 characters when it begins with `\b` (the engine tries it at
every position) and under 1 us when it begins with a
literal word (the engine jumps to its occurrences): so the rules whose key words
everyday text holds ("yourself", "life", "self") begin with a literal, the word boundary
put after it as a look-behind (`self(?<=\bself)`), and key words are as specific as the
rule allows ("cum " rather than "cum", which "document" holds). `bench.scenarios.
moderation_cost` measures what it adds to a chat turn (docs/performance.md).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

import ahocorasick

from avatar_chat.safety.base import (
    SELF_HARM,
    SELF_HARM_INSTRUCTIONS,
    SELF_HARM_INTENT,
    SEXUAL,
    ModerationResult,
)

CATEGORIES: Final = (SELF_HARM, SELF_HARM_INTENT, SELF_HARM_INSTRUCTIONS, SEXUAL)
CONTEXT_CHARS: Final = 64

# Words after "...myself" that make "cutting myself" or "burning myself" everyday speech.
_NOT_SELF_HARM_OBJECT = r"(?!\s+(?:a|an|some|another|out|off|free|loose|short|up|down)\b)"
_DONT = r"(?:don't|dont|do\s+not|no\s+longer)"
# A sentence end or a clause joiner: "I don't want to live." but not "...to live in London".
_CLAUSE_END = r"(?=\s*(?:$|[.!?,;:)]|\s(?:and|but|because|cause|since|so|anymore|any\s+more)\b))"
_NOT_A_FILM = r"(?!\s+(?:squad|mission|doors?|run|bomb\w*|pact\s+movie|king)\b)"
# "let's...", "I want you to...", "can we...": the start of a request.
_ASK = (
    r"(?:let's|lets|wanna|want\s+to|want\s+you\s+to|i\s+need\s+you\s+to|can\s+(?:we|i|you)|"
    r"could\s+(?:we|you)|will\s+you|would\s+you|please|gonna|going\s+to|i'll|i\s+will)"
)
_GENITALS = r"(?:cock|dick|penis|pussy|clit|tits|boobs|nipples|crotch|balls)"
# Asking how to end one's life, after "how do I..." or "the best way to...".
_SELF_HARM_OBJECT = (
    r"(?:kill\s+(?:myself|yourself|oneself)|commit\s+suicide|end\s+(?:my|your|one's)\s+(?:own\s+)?life|"
    r"overdose|hang\s+(?:myself|yourself|oneself)|slit\s+(?:my|your)\s+wrists?)\b"
)
_WAYS = ("best", "easiest", "quickest", "fastest", "surest", "painless", "least painful")

# Each rule: the words one of which any text it matches contains (a cheap `in` test that
# skips the regex for most texts), and the regex.
_Rule = tuple[tuple[str, ...], str]
_INTENT: tuple[_Rule, ...] = (
    (
        ("myself",),
        r"\b(?:kill|killing)\s+myself\b(?!\s+(?:laughing|with\s+laughter|trying|at\s+work|over|for)\b)",
    ),
    (("myself",), r"\b(?:unalive|off)\s+myself\b"),
    (
        ("myself",),
        r"\b(?:been|keep|kept|started|start|i'm|im|i\s+am|was|i've)\s+(?:\w+\s+)?"
        r"(?:cutting|hurting|harming|burning|starving)\s+myself\b" + _NOT_SELF_HARM_OBJECT,
    ),
    (
        ("myself",),
        r"\b(?:want|wanted|wanna|going|gonna|need|plan|planning|urges?|tempted)\s+(?:to\s+)?"
        r"(?:cut|hurt|harm|burn|starve)\s+myself\b" + _NOT_SELF_HARM_OBJECT,
    ),
    (
        ("my life", "my own life"),
        r"\b(?:end|ending|take|taking)\s+my\s+(?:own\s+)?life\b"
        r"(?!\s+(?:savings|insurance|story|back|into|in\s+my\s+hands)\b)",
    ),
    (("it all",), r"\bend(?:ing)?\s+it\s+all\b"),
    (
        ("suicidal",),
        r"\b(?:i'm|im|i\s+am|i\s+feel|i\s+felt|i've\s+been|i\s+was|feeling)\s+(?:\w+\s+)?suicidal\b",
    ),
    (
        ("suicide",),
        r"\b(?:think|thinking|thought|thoughts|considering|consider|considered|contemplat(?:e|ing|ed)|"
        r"attempt|attempted|attempting|plan|planning|going\s+to|gonna|want\s+to)\s+"
        r"(?:about\s+|of\s+)?(?:committing\s+|commit\s+)?suicide\b" + _NOT_A_FILM,
    ),
    (
        ("t want", "longer want"),
        r"\b" + _DONT + r"\s+want\s+to\s+(?:live|be\s+alive|exist|wake\s+up)\b" + _CLAUSE_END,
    ),
    (
        ("anymore", "any more"),
        r"\b" + _DONT + r"\s+want\s+to\s+be\s+(?:here|around)\s+(?:anymore|any\s+more)\b",
    ),
    (
        ("to die", "wanna die"),
        r"\bi\s+(?:just\s+|really\s+|honestly\s+|kinda\s+)?(?:want\s+to|wanna)\s+die\b"
        r"(?!\s+(?:laughing|of\s+(?:laughter|embarrassment|shame|boredom)|happy|old|in\s+peace)\b)",
    ),
    (("dead",), r"\bwish\s+i\s+(?:was|were|could\s+be)\s+dead\b|\bbetter\s+off\s+dead\b"),
    (("live for",), r"\b(?:nothing|no\s+one|nobody)\s+(?:left\s+)?to\s+live\s+for\b"),
    (
        ("no reason", "no point"),
        r"\bno\s+(?:reason|point)\s+(?:to|in)\s+(?:live|living|go\s+on|going\s+on)\b",
    ),
    (
        ("born",),
        r"\bwish\s+i\s+(?:had\s+never\s+been|was\s+never|were\s+never|wasn't|hadn't\s+been)\s+born\b",
    ),
    (
        ("overdose", " od"),
        r"\b(?:want\s+to|going\s+to|gonna|will|plan\s+to|planning\s+to)\s+(?:overdose|od)\b",
    ),
    (("take all",), r"\btake\s+all\s+(?:of\s+)?(?:my|the|these|those)\s+(?:pills|meds|medication|tablets)\b"),
    (
        ("jump", "throw"),
        r"\b(?:want\s+to|going\s+to|gonna|plan\s+to|planning\s+to)\s+(?:jump|throw\s+myself)\s+"
        r"(?:off|from|in\s+front\s+of)\s+(?:a|the|this|that)\s+(?:bridge|roof|building|cliff|train)\b",
    ),
)
# Both begin with a literal word (see the module's docstring): "how", or "way" after one of
# _WAYS (a look-behind each, with single spaces: the text is normalised).
_INSTRUCTIONS: tuple[_Rule, ...] = (
    (
        ("myself", "yourself", "oneself", "suicide", "life", "overdose", "wrist"),
        r"how(?<=\bhow)\s+(?:do\s+i|can\s+i|could\s+i|should\s+i|would\s+i|to|do\s+you|does\s+one)\s+"
        + _SELF_HARM_OBJECT,
    ),
    (
        ("myself", "yourself", "oneself", "suicide", "life", "overdose", "wrist"),
        r"way(?:" + "|".join(rf"(?<=\b{way} way)" for way in _WAYS) + r")\s+to\s+" + _SELF_HARM_OBJECT,
    ),
)
_MENTION: tuple[_Rule, ...] = (
    (("self",), r"self(?<=\bself)[-\s]?(?:harm|injur)\w*"),
    (("suicid",), r"\bsuicidal\b|\bsuicide\s+(?:attempt|note|ideation|plan)s?\b"),
    (("himself", "herself", "themsel"), r"\bkill(?:ed|s|ing)?\s+(?:himself|herself|themselves|themself)\b"),
    (("wrist",), r"\bslit\s+(?:my|his|her|their)\s+wrists?\b"),
)
_SEXUAL: tuple[_Rule, ...] = (
    (
        ("sex",),
        r"\b(?:have|having|had)\s+sex\s+with\s+(?:me|you)\b"
        r"|\b(?:want|need|crave|craving)\s+(?:some\s+)?sex\b(?!\s+(?:education|ed|ratio|change)\b)",
    ),
    (
        ("sex", "make love", "naked", "strip", "fuck", "sleep together", "masturbat", "touch yourself"),
        r"\b" + _ASK + r"\s+(?:\w+\s+)?(?:have\s+sex|make\s+love|sext|get\s+naked|strip\s+(?:naked|for\s+me)|"
        r"fuck(?!\s+(?:off|up|around|this|that|it)\b)|sleep\s+together|masturbate|touch\s+yourself)\b",
    ),
    (
        ("nudes", "naked", "tits", "boobs", "dick", "pussy"),
        r"\b(?:send|show)\s+(?:me\s+)?(?:your\s+|some\s+)?(?:nudes|naked\s+(?:pics?|photos?|pictures|selfies?)|"
        r"tits|boobs|dick|pussy)\b",
    ),
    (
        ("cock", "dick", "penis", "pussy", "clit", "tits", "boobs", "nipples", "crotch", "balls"),
        r"\b(?:touch|rub|stroke|lick|suck|grab)\s+(?:my|your|his|her)\s+" + _GENITALS + r"\b"
        r"|\b(?:my|your)\s+(?:hard|throbbing|wet)\s+(?:cock|dick|pussy)\b",
    ),
    (
        ("fuck",),
        r"\b(?:fuck|fucking|fucked)\s+(?:me|you|her|him)\s+(?:hard|harder|deep|deeper|all\s+night|senseless)\b",
    ),
    (
        ("ride", "riding", "my face"),
        r"\b(?:ride|riding)\s+(?:my|your)\s+(?:cock|dick|face)\b|\bsit\s+on\s+my\s+face\b",
    ),
    (("clothes",), r"\btake\s+(?:off\s+)?(?:your|my)\s+clothes\s+off\s+(?:for\s+me|now)\b"),
    (
        (
            "blowjob",
            "blow job",
            "handjob",
            "hand job",
            "masturbat",
            "orgasm",
            "horny",
            "sexting",
            "dildo",
            "jerk",
            "cum ",
            "cumming ",
            "talk dirty",
            "dirty talk",
            "erotic",
        ),
        r"\b(?:blow\s?jobs?|hand\s?jobs?|masturbat\w*|orgasm\w*|horny|sexting|dildos?|jerk(?:ing)?\s+off|"
        r"cum(?:ming)?\s+(?:on|in|inside)\s+(?:me|you|my|your)|talk\s+dirty|dirty\s+talk|erotic\s+roleplay)\b",
    ),
    (("porn",), r"(?<!food\s)(?<!ruin\s)(?<!disaster\s)(?<!cabin\s)\bporn(?:o|ography|ographic|s)?\b"),
)

RULES: Final = tuple(
    (frozenset(categories), keywords, re.compile(pattern))
    for rules, categories in (
        (_INTENT, (SELF_HARM, SELF_HARM_INTENT)),
        (_INSTRUCTIONS, (SELF_HARM, SELF_HARM_INSTRUCTIONS)),
        (_MENTION, (SELF_HARM,)),
        (_SEXUAL, (SEXUAL,)),
    )
    for keywords, pattern in rules
)
_KEYWORDS: Final = tuple(sorted({keyword for _, keywords, _ in RULES for keyword in keywords}))
# All key words found in one pass over the text (an Aho-Corasick automaton, in C): ~3x
# cheaper than a substring test per key word, which was most of classify's time.
_FIND_KEYWORDS: Final = ahocorasick.Automaton()
for _keyword in _KEYWORDS:
    _FIND_KEYWORDS.add_word(_keyword, _keyword)
_FIND_KEYWORDS.make_automaton()
_APOSTROPHES: Final = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalize(text: str) -> str:
    """What the rules read: lower case, straight apostrophes, single spaces."""
    lowered = text.lower()
    if "\u2019" in lowered or "\u2018" in lowered or "\u02bc" in lowered or "`" in lowered:
        lowered = lowered.translate(_APOSTROPHES)  # a translation costs ~4 us per 1,000 chars
    return " ".join(lowered.split())


def classify(text: str) -> frozenset[str]:
    """The categories `text` falls in; empty for none. Plain CPU work, no I/O."""
    normalized = normalize(text)
    present = {keyword for _, keyword in _FIND_KEYWORDS.iter(normalized)}
    found: set[str] = set()
    if not present:
        return frozenset()
    for categories, keywords, pattern in RULES:
        if categories <= found or present.isdisjoint(keywords):
            continue
        if pattern.search(normalized):
            found |= categories
    return frozenset(found)


# What every clean text gets: one shared result, not a new one per check.
_CLEAN: Final = ModerationResult(
    flagged=False, categories=MappingProxyType(dict.fromkeys(CATEGORIES, 0.0)), provider="offline"
)


class OfflineModerator:
    name: str = "offline"
    # Every rule matches a phrase of at most about this many characters (a test holds the
    # rules to 40 on every phrase they must catch, the longest 27): a reply is read in
    # parts overlapping by this.
    context_chars: int | None = CONTEXT_CHARS

    async def check(self, text: str) -> ModerationResult:
        flagged = classify(text)
        if not flagged:
            return _CLEAN
        return ModerationResult(
            flagged=bool(flagged),
            categories={category: 1.0 if category in flagged else 0.0 for category in CATEGORIES},
            provider=self.name,
            flagged_categories=flagged,
        )

    async def aclose(self) -> None:
        return None
