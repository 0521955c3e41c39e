"""Token figures read from a third party, and estimated ones (no database)."""

from __future__ import annotations

import pytest

from avatar_chat.core.tokens import MAX_TOKENS, reported_tokens
from avatar_chat.usage.records import ModerationSpend, estimate_tokens, usage_entry


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        [],
        "12",
        {"prompt_tokens": 3},
        {"prompt_tokens": -1, "completion_tokens": 2},
        {"prompt_tokens": 1, "completion_tokens": True},
        {"prompt_tokens": 1.5, "completion_tokens": 2},
        {"prompt_tokens": "1", "completion_tokens": 2},
        {"prompt_tokens": MAX_TOKENS + 1, "completion_tokens": 2},
    ],
)
def test_implausible_figures_are_not_taken(usage: object) -> None:
    assert reported_tokens(usage) is None


def test_reported_figures() -> None:
    assert reported_tokens({"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}) == (12, 0)


def test_estimates_round_up_at_four_characters_a_token() -> None:
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, 400)] == [0, 1, 1, 2, 100]
    entry = usage_entry(
        "reply", "m", "free", reported=None, prompt_chars=9, completion_chars=4, status="stopped"
    )
    assert entry == {
        "kind": "reply",
        "model": "m",
        "plan": "free",
        "calls": 1,
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "source": "estimate",
        "status": "stopped",
    }
    reported = usage_entry("summary", "m", None, reported=(7, 2), prompt_chars=9, completion_chars=4)
    assert (reported["prompt_tokens"], reported["completion_tokens"], reported["source"]) == (
        7,
        2,
        "provider",
    )


def test_moderation_calls_add_up_and_any_estimate_marks_the_entry() -> None:
    spend = ModerationSpend()
    assert spend.entry("free") is None
    spend.add("guard", (10, 1), 40)
    first = spend.entry("free")
    assert first is not None
    assert (first["calls"], first["prompt_tokens"], first["source"]) == (1, 10, "provider")
    spend.add("guard", None, 40)
    entry = spend.entry("free")
    assert entry is not None
    assert (entry["calls"], entry["prompt_tokens"], entry["completion_tokens"], entry["source"]) == (
        2,
        20,
        1,
        "estimate",
    )
