"""The prompt of a turn and the window budget (what the model sees, what the cache holds)."""

from __future__ import annotations

from avatar_chat.chat.prompt import build_request
from avatar_chat.chat.window import WindowMessage, fit_window
from tests.support.factories import avatar_snapshot


def messages(*sizes: int) -> list[WindowMessage]:
    return [
        WindowMessage(seq=i + 1, role="user" if i % 2 == 0 else "assistant", content="x" * n)
        for i, n in enumerate(sizes)
    ]


def test_fit_window_keeps_the_newest_within_both_budgets() -> None:
    window = messages(10, 10, 10, 10, 10)
    assert [m.seq for m in fit_window(window, max_messages=3, max_chars=1000)] == [3, 4, 5]
    assert [m.seq for m in fit_window(window, max_messages=10, max_chars=25)] == [4, 5]
    assert fit_window(window, max_messages=0, max_chars=1000) == ()
    # One huge old message does not push out the recent ones; it is what gets dropped.
    assert [m.seq for m in fit_window(messages(7000, 3000, 100), max_messages=20, max_chars=8000)] == [2, 3]


def test_build_request_orders_system_window_then_the_new_message() -> None:
    avatar = avatar_snapshot(name="Mira", personality="caring", backstory="Nurse.", version=4)
    request = build_request(avatar, "companion", messages(3, 4), "now")
    roles = [m.role for m in request.messages]
    assert roles == ["system", "user", "assistant", "user"]
    system = request.messages[0].content
    assert "Mira" in system and "caring" in system and "Nurse." in system and "companion" in system.lower()
    assert request.user_message == "now"
