"""ReplyCheck and SafetyPolicy on their own: what a streaming reply lets out, when it is
checked, and the actions a verdict implies (no database, the offline moderator)."""

from __future__ import annotations

import pytest

from avatar_chat.chat.moderation import (
    Moderation,
    ModerationMetrics,
    ReplyCheck,
    SafetyPolicy,
    parse_actions,
)
from avatar_chat.core.settings import OutputMode, Settings
from avatar_chat.safety.base import ModerationResult
from avatar_chat.safety.offline import OfflineModerator


class CountingModerator(OfflineModerator):
    def __init__(self, context_chars: int | None = OfflineModerator.context_chars) -> None:
        self.texts: list[str] = []
        self.context_chars = context_chars  # None: as a model, which reads a reply whole at its end

    async def check(self, text: str) -> ModerationResult:
        self.texts.append(text)
        return await super().check(text)


def check_of(
    every: int, mode: OutputMode, *, minor: bool = False, context_chars: int | None = 120
) -> tuple[ReplyCheck, CountingModerator]:
    settings = Settings(_env_file=None, moderation_output_check_chars=every, moderation_output_mode=mode)
    moderator = CountingModerator(context_chars)
    moderation = Moderation(moderator, SafetyPolicy.from_settings(settings), ModerationMetrics())
    check = moderation.reply_check(minor=minor)
    assert check is not None
    return check, moderator


async def feed(check: ReplyCheck, chunks: list[str]) -> list[str]:
    out = [await check.add(chunk) for chunk in chunks]
    if check.flagged is None:
        out.append(await check.finish())
    return out


CLEAN = [f"word{n} " for n in range(30)]  # 6-7 characters each


@pytest.mark.parametrize("context_chars", [None, 120, 30])
async def test_stream_mode_lets_each_chunk_out_at_once_and_checks_every_n_characters(
    context_chars: int | None,
) -> None:
    check, moderator = check_of(50, OutputMode.stream, context_chars=context_chars)
    out = await feed(check, CLEAN)
    assert out[:-1] == CLEAN and out[-1] == ""
    text = "".join(CLEAN)
    # Once at least 50 new characters are in, then at the end.
    points, length, checked = [], 0, 0
    for chunk in CLEAN:
        length += len(chunk)
        if length - checked >= 50:
            points.append(length)
            checked = length
    assert points == [54, 109, 165]
    overlap = 50 if context_chars is None else min(50, context_chars)
    starts = [0, *(max(0, p - overlap) for p in points)]
    assert moderator.texts[:3] == [text[a:b] for a, b in zip(starts, points, strict=False)]
    # A model reads the whole reply at the end; local rules read what is left, with the overlap.
    assert moderator.texts[3] == (text if context_chars is None else text[165 - overlap :])


async def test_hold_mode_lets_out_only_checked_text() -> None:
    check, _ = check_of(50, OutputMode.hold)
    out = await feed(check, CLEAN)
    assert "".join(out) == "".join(CLEAN)
    # Held until a check passed: nothing for the first 8 chunks, then all 9 at once.
    assert out[:8] == [""] * 8 and out[8] == "".join(CLEAN[:9])
    assert out[-1] == "".join(CLEAN[25:])  # what came after the last check (at 162), after the whole one


async def test_a_phrase_across_a_check_boundary_is_caught_and_nothing_more_goes_out() -> None:
    check, _ = check_of(20, OutputMode.hold)
    chunks = ["A friendly opening line. ", "Now let's have ", "sex tonight. ", "And more. ", "x " * 30]
    out = await feed(check, chunks)
    assert check.flagged is not None and check.flagged.categories == ("sexual",)
    assert "sex" not in "".join(out)
    assert out[-1] == ""


async def test_a_minor_gets_sexual_replies_filtered_whatever_the_operator_allows() -> None:
    settings = Settings(_env_file=None, moderation_actions="sexual=allow")
    policy = SafetyPolicy.from_settings(settings)
    verdict = policy.verdict(await OfflineModerator().check("let's have sex"))
    assert (verdict.block, verdict.minor_block) == (False, True)
    assert not verdict.refuses(False) and verdict.refuses(True)


def test_actions_parse_over_the_defaults() -> None:
    actions = parse_actions(" sexual=allow ,violence=block,, ")
    assert actions["sexual"] == "allow" and actions["violence"] == "block"
    assert actions["self-harm/intent"] == "crisis"
    for bad in ("sexual", "=block", "sexual=ban"):
        with pytest.raises(ValueError, match="MODERATION_ACTIONS"):
            parse_actions(bad)


def test_the_crisis_notice_follows_accept_language() -> None:
    settings = Settings(_env_file=None, safety_crisis_notices={"en-GB": "UK", "de": "DE"})
    policy = SafetyPolicy.from_settings(settings)
    assert policy.crisis_text("en-GB,en;q=0.8") == "UK"
    assert policy.crisis_text("de-AT") == "DE"
    assert policy.crisis_text("fr-FR, de;q=0.5") == "DE"
    assert policy.crisis_text("fr") == policy.crisis_text(None) == settings.safety_crisis_notice
