"""One JSON POST to a moderation service, within one deadline: what the remote providers share.

httpx is used directly (not the `openai` SDK, whose transport respx cannot fake): a
moderation call is one small request and answer. Retries (connection errors, 408, 409,
429, 5xx; short backoff) all happen inside the one deadline `timeout_s`, enforced with
asyncio so it holds whatever the transport does. Every failure becomes
`ModerationUnavailable`, its message free of the API key.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from avatar_chat.safety.base import ModerationUnavailable

_CONNECT_TIMEOUT_CAP_S = 5.0
# httpx's own timeout is a backstop kept past our deadline, so the deadline fires first.
_TRANSPORT_TIMEOUT_MARGIN_S = 1.0
_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_BACKOFF_S = 0.1


class JsonPoster:
    """An httpx client for one base URL and key, posting JSON and answering the decoded JSON."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float,
        max_retries: int,
    ) -> None:
        self._provider = provider
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(
                timeout_s + _TRANSPORT_TIMEOUT_MARGIN_S, connect=min(_CONNECT_TIMEOUT_CAP_S, timeout_s)
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, path: str, body: dict[str, object]) -> object:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._post_with_retries(path, body)
        except TimeoutError:
            raise self.unavailable(f"no answer within {self._timeout_s:g} s.", timeout=True) from None

    async def _post_with_retries(self, path: str, body: dict[str, object]) -> object:
        attempt = 0
        while True:
            try:
                response = await self._client.post(path, json=body)
            except httpx.TimeoutException:
                failure = self.unavailable("the request timed out.", timeout=True)
            except httpx.HTTPError as exc:
                failure = self.unavailable(f"could not reach the service ({type(exc).__name__}).")
            else:
                if response.is_success:
                    return self._decode(response)
                # The status only: an error body may echo the text being checked (a user's
                # message) or the key, and this message reaches logs.
                failure = self.unavailable(f"HTTP {response.status_code}.")
                if response.status_code not in _RETRY_STATUSES:
                    raise failure
            if attempt >= self._max_retries:
                raise failure
            await asyncio.sleep(_BACKOFF_S * 2**attempt)
            attempt += 1

    def _decode(self, response: httpx.Response) -> object:
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self.unavailable("the answer is not JSON.") from None

    def unavailable(self, detail: str, *, timeout: bool = False) -> ModerationUnavailable:
        return ModerationUnavailable(
            self._provider, f"Moderation provider {self._provider}: {detail}", timeout=timeout
        )
