"""The project's signing keys (JWKS), fetched and cached for ES256/RS256 tokens.

Cached for JWKS_CACHE_TTL_S; a token naming an unknown `kid` refetches at most once per
UNKNOWN_KID_REFETCH_INTERVAL_S (a flood of random kids is not a flood of fetches); after a
failed fetch the cached set (or a 503) is served for JWKS_RETRY_AFTER_S. Concurrent
verifies share one fetch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from avatar_chat.auth.errors import unauthorized
from avatar_chat.core.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# A flood of tokens with random kids must not turn into a flood of JWKS requests.
UNKNOWN_KID_REFETCH_INTERVAL_S: Final = 30.0
# After a failed fetch, serve the cached set (or 503) for this long instead of retrying per request.
JWKS_RETRY_AFTER_S: Final = 5
JWKS_FETCH_TIMEOUT_S: Final = 5.0


class JwksKeys:
    """The key set at `url`, as `key_for(kid, alg)` needs it; `due` once it should be refetched."""

    def __init__(
        self, url: str, http: httpx.AsyncClient, *, ttl_s: float, clock: Callable[[], float]
    ) -> None:
        self._jwks_url = url
        self._http = http
        self._ttl = ttl_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: tuple[jwt.PyJWK, ...] | None = None
        self._expires_at = float("-inf")
        self._retry_not_before = float("-inf")
        self._unknown_kid_refetch_not_before = float("-inf")
        # Bumped by every completed fetch, so a task that waited on the lock can tell that
        # someone else already fetched (or failed) while it waited, and not fetch again.
        self._generation = 0

    @property
    def due(self) -> bool:
        """The cached set is due for a refetch: a token verified with it is checked again."""
        return self._clock() >= self._expires_at

    async def key_for(self, kid: str, alg: str) -> jwt.PyJWK:
        generation = self._generation
        keys = await self._current_keys()
        if not _has_kid(keys, kid) and self._generation == generation:
            # Only when this verify did not itself fetch: a set fetched a moment ago won't differ.
            keys = await self._refetch_for_unknown_kid(generation)
        if not _has_kid(keys, kid):
            raise unauthorized("unknown_key")
        jwk = _usable_key(keys, kid, alg)
        if jwk is None:
            raise unauthorized("unsupported_algorithm")
        return jwk

    def _can_serve_cache(self, now: float) -> bool:
        return self._keys is not None and (now < self._expires_at or now < self._retry_not_before)

    async def _current_keys(self) -> tuple[jwt.PyJWK, ...]:
        if self._can_serve_cache(self._clock()):
            return self._keys or ()
        generation = self._generation
        async with self._lock:
            now = self._clock()
            if (
                self._generation == generation
                and not self._can_serve_cache(now)
                and now >= self._retry_not_before
            ):
                await self._fetch()
            if self._keys is None:
                raise ServiceUnavailable(
                    "Cannot fetch the Supabase signing keys (JWKS); retry shortly.",
                    code="jwks_unavailable",
                    retry_after_s=JWKS_RETRY_AFTER_S,
                )
            return self._keys

    async def _refetch_for_unknown_kid(self, generation: int) -> tuple[jwt.PyJWK, ...]:
        async with self._lock:
            now = self._clock()
            if (
                self._generation == generation
                and now >= self._unknown_kid_refetch_not_before
                and now >= self._retry_not_before
            ):
                self._unknown_kid_refetch_not_before = now + UNKNOWN_KID_REFETCH_INTERVAL_S
                await self._fetch()
            return self._keys or ()

    async def _fetch(self) -> None:
        """Refresh the cached set; on failure keep the old one. Call with the lock held."""
        assert self._jwks_url is not None
        try:
            response = await self._http.get(
                self._jwks_url,
                headers={"Accept": "application/json"},
                timeout=JWKS_FETCH_TIMEOUT_S,
            )
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            # Not in `finally`: a cancelled fetch must leave the generation alone so the next
            # waiter fetches instead of concluding that the endpoint is down.
            self._generation += 1
            self._retry_not_before = self._clock() + JWKS_RETRY_AFTER_S
            log.warning("JWKS fetch from %s failed: %r", self._jwks_url, exc)
            return
        self._generation += 1
        self._keys = keys
        self._expires_at = self._clock() + self._ttl


def _parse_jwks(document: Any) -> tuple[jwt.PyJWK, ...]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS document has no 'keys' list")
    # A project still on the legacy HS256 secret publishes an empty set: that is an answer
    # (no such key), not an outage.
    if not document["keys"]:
        return ()
    try:
        return tuple(jwt.PyJWKSet.from_dict(document))
    except jwt.PyJWKSetError:
        log.warning("JWKS holds no key this server can use")
        return ()


def _has_kid(keys: tuple[jwt.PyJWK, ...], kid: str) -> bool:
    return any(key.key_id == kid for key in keys)


def _usable_key(keys: tuple[jwt.PyJWK, ...], kid: str, alg: str) -> jwt.PyJWK | None:
    """The key named `kid` if it is a public signing key of exactly the header's algorithm."""
    for key in keys:
        if key.key_id != kid or key.public_key_use not in (None, "sig"):
            continue
        if key.algorithm_name != alg:
            continue
        material = key.key
        if alg == "ES256" and isinstance(material, EllipticCurvePublicKey):
            if isinstance(material.curve, SECP256R1):
                return key
        elif alg == "RS256" and isinstance(material, RSAPublicKey):
            return key
    return None
