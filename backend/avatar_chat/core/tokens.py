"""Token figures as OpenAI-compatible APIs report them (`usage` of a completion or of a
streamed completion's last chunk), read defensively: they come from a third party."""

from __future__ import annotations

from typing import Final

# No call spends more: a larger figure is a provider's bug, and would not fit the records.
MAX_TOKENS: Final = 100_000_000


def reported_tokens(usage: object) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) of a `usage` object; None when it is absent or its
    figures are not plausible counts (the call is then estimated from its text)."""
    if not usage or not isinstance(usage, dict):  # absent, or null in every chunk but the last
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int:
        return None
    if not (0 <= prompt <= MAX_TOKENS and 0 <= completion <= MAX_TOKENS):
        return None
    return prompt, completion
