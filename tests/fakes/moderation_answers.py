"""What the remote moderation providers answer, for respx: OpenAI's /moderations
(omni-moderation-latest) and a Llama Guard model behind /chat/completions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A self-harm message as omni-moderation scores it.
SCORES = {
    "harassment": 0.0001,
    "harassment/threatening": 0.0002,
    "hate": 0.00001,
    "hate/threatening": 0.000001,
    "illicit": 0.00003,
    "illicit/violent": 0.00001,
    "self-harm": 0.91,
    "self-harm/intent": 0.88,
    "self-harm/instructions": 0.002,
    "sexual": 0.0004,
    "sexual/minors": 0.00001,
    "violence": 0.03,
    "violence/graphic": 0.0001,
}


def moderation_body(*, flagged: bool = False, scores: Mapping[str, float] | None = None) -> dict[str, Any]:
    """An answer as OpenAI's /moderations sends it: SCORES when `flagged`, else every
    category at 0.0001, with `scores` over that; a score of 0.5 or more is flagged."""
    all_scores = {**(SCORES if flagged else dict.fromkeys(SCORES, 0.0001)), **(scores or {})}
    on = {category for category, score in all_scores.items() if score >= 0.5}
    return {
        "id": "modr-123",
        "model": "omni-moderation-latest",
        "results": [
            {
                "flagged": bool(on),
                "categories": {category: category in on for category in all_scores},
                "category_scores": all_scores,
                "category_applied_input_types": {category: ["text"] for category in all_scores},
            }
        ],
    }


def chat_body(content: Any) -> dict[str, Any]:
    """A Llama Guard verdict ("safe", "unsafe\\nS11") as a chat completion."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "llama-guard3:8b",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
    }
