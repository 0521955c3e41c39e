"""The SSE encoding of a reply's events: each event is the JSON `json.dumps` writes
(compact separators, ASCII), and a `delta` written out by hand is the same bytes."""

from __future__ import annotations

import json

import pytest

from avatar_chat.chat import events

TEXTS = [
    "",
    "Hello ",
    'say "hi"\\ back',
    "line\nbreak\ttab\r\x00\x1f\x7f",
    "caf\u00e9, na\u00efve, \u4f60\u597d",
    "emoji \U0001f600 and a lone surrogate \ud800",
    "</script><!-- & '",
    "\u2028\u2029",
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_delta_is_the_delta_event(text: str) -> None:
    expected = f"id: 3:17\nevent: delta\ndata: {json.dumps({'content': text}, separators=(',', ':'))}\n\n"

    assert events.encode_delta(text, 3, 17) == expected
    assert events.encode("delta", {"content": text}, events.event_id(3, 17)) == expected
    assert json.loads(expected.split("data: ", 1)[1]) == {"content": text}


def test_an_event_is_compact_json() -> None:
    data = {"id": "x", "content": 'caf\u00e9 "q"', "n": 1, "f": 0.5, "none": None, "list": [True, {"a": []}]}

    assert events.encode("done", data, "1:5") == (
        f"id: 1:5\nevent: done\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
    )
    assert (
        events.encode("error", data) == f"event: error\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
    )
