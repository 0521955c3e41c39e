"""OpenAI's moderation API, or any server speaking it: `POST {base_url}/moderations`.

Request `{"model": "omni-moderation-latest", "input": text}`; the answer's
`results[0]` carries `flagged`, `categories` (category -> bool, OpenAI's own thresholds)
and `category_scores` (category -> 0..1), read here as they are: every scored category
lands in `ModerationResult.categories`, the true ones in `flagged_categories`. An answer
of any other shape raises `ModerationUnavailable`.
"""

from __future__ import annotations

from typing import Final

from avatar_chat.safety.base import ModerationResult
from avatar_chat.safety.http import JsonPoster

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_MODEL: Final = "omni-moderation-latest"


class OpenAIModerator:
    name: str = "openai"
    context_chars: int | None = None

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        timeout_s: float = 5.0,
        max_retries: int = 1,
    ) -> None:
        self._model = model
        self._http = JsonPoster(self.name, base_url, api_key, timeout_s=timeout_s, max_retries=max_retries)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self, text: str) -> ModerationResult:
        answer = await self._http.post("moderations", {"model": self._model, "input": text})
        results = answer.get("results") if isinstance(answer, dict) else None
        result = results[0] if isinstance(results, list) and results else None
        if not isinstance(result, dict):
            raise self._http.unavailable("the answer has no results.")
        flagged = result.get("flagged")
        booleans = result.get("categories")
        scores = result.get("category_scores")
        if not isinstance(flagged, bool) or not isinstance(booleans, dict) or not isinstance(scores, dict):
            raise self._http.unavailable("the result lacks flagged, categories or category_scores.")
        categories: dict[str, float] = {}
        for category, score in scores.items():
            # bool is an int: a score of true is as unreadable as a string.
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise self._http.unavailable(f"the score of {category!r} is not a number.")
            categories[str(category)] = float(score)
        flagged_categories = frozenset(str(c) for c, on in booleans.items() if on is True)
        return ModerationResult(
            flagged=flagged,
            categories=categories,
            provider=self.name,
            flagged_categories=flagged_categories,
            model=self._model,  # the API reports no tokens: they are estimated from the text
        )
