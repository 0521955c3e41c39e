"""Verify Supabase access tokens: HS256 with the project secret, ES256/RS256 against JWKS."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import httpx
import jwt
from jwt.types import Options
from pydantic import SecretStr

from avatar_chat.auth.errors import unauthorized
from avatar_chat.auth.jwks import JwksKeys
from avatar_chat.core.claims import Claims
from avatar_chat.core.settings import Settings

log = logging.getLogger(__name__)

# Supabase access tokens are ~1 KB; the cap makes an oversized header cost one len() call.
MAX_TOKEN_CHARS: Final = 16 * 1024
# A client sends the same token with every request until it refreshes: remember tokens
# already verified (never past their exp, never longer than this), by the SHA-256 of the
# token, holding only their claims; bounded by count and by bytes, since a user can pad
# their own token (user_metadata) to the 16 KiB the size check lets through.
VERIFIED_CACHE_TTL_S: Final = 60.0
VERIFIED_CACHE_SIZE: Final = 10_000
VERIFIED_CACHE_MAX_BYTES: Final = 16 * 1024 * 1024

_ASYMMETRIC_ALGS: Final = frozenset({"ES256", "RS256"})
_SUPPORTED_ALGS: Final = _ASYMMETRIC_ALGS | {"HS256"}
_USER_ROLE: Final = "authenticated"
_API_KEY_ROLES: Final = frozenset({"anon", "service_role"})
# Supabase's non-JWT API keys; recognised so the client gets the helpful error, not "malformed".
_API_KEY_PREFIXES: Final = ("sb_publishable_", "sb_secret_")


# Pass 1 checks only the signature: role must be looked at before claims, so that an API key
# (no sub, no aud, iss "supabase") is reported as such rather than as a missing claim.
_SIGNATURE_ONLY: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


class TokenVerifier:
    """Turns a bearer token into `Claims` or raises `Unauthorized` with a stable code.

    JWKS failures raise `ServiceUnavailable(code="jwks_unavailable")`: the token may be fine,
    so the client should retry rather than sign in again.
    """

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        hs256_secret: SecretStr | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache_max_bytes: int = VERIFIED_CACHE_MAX_BYTES,
    ) -> None:
        # The resolved secret (the embedded mode generates one) wins over the setting.
        secret = hs256_secret or settings.supabase_jwt_secret
        # An empty HMAC key would let anyone mint tokens: treat it as "not configured".
        self._secret = secret.get_secret_value() if secret is not None else None
        if not self._secret:
            self._secret = None
        elif len(self._secret.encode()) < 32:
            log.warning("SUPABASE_JWT_SECRET is shorter than 32 bytes; HS256 needs at least 32")
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_s
        # Pass 2 of verify: the signature was checked in pass 1, this runs only the claim checks.
        self._claim_checks: Options = {
            "verify_signature": False,
            "verify_exp": True,
            "verify_nbf": True,
            "verify_iat": True,
            "verify_aud": True,
            "verify_iss": self._issuer is not None,
            "verify_sub": True,
            "verify_jti": True,
            "require": ["exp", "sub"],
        }

        # Only drives the JWKS cache; exp/nbf/iat are checked by PyJWT against wall-clock time.
        jwks_url = settings.jwks_url
        self._jwks = (
            None
            if jwks_url is None
            else JwksKeys(jwks_url, http, ttl_s=settings.jwks_cache_ttl_s, clock=clock)
        )
        self._verified: OrderedDict[bytes, tuple[Claims, float, bool]] = OrderedDict()
        self._verified_bytes = 0
        self._verified_max_bytes = cache_max_bytes

    async def verify(self, token: str) -> Claims:
        if not token:
            raise unauthorized("missing_token")
        if len(token) > MAX_TOKEN_CHARS:
            raise unauthorized("token_too_large")
        # surrogatepass: a lone surrogate must reach the "malformed" answer, not raise here.
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._verified.get(key)
        if cached is not None:
            claims, not_after, jwks_bound = cached
            # A JWKS-signed token is re-checked once the key set is due for a refetch, so a
            # key the project withdrew stops working exactly as without this cache.
            if time.time() < not_after and not (jwks_bound and self._jwks is not None and self._jwks.due):
                self._verified.move_to_end(key)
                return claims
            self._forget(key)
        claims, jwks_bound = await self._verify_uncached(token)
        assert claims.exp is not None  # required by the claim checks
        self._remember(key, claims, min(claims.exp, time.time() + VERIFIED_CACHE_TTL_S), jwks_bound)
        return claims

    @property
    def cached_bytes(self) -> int:
        """What the verified-token cache holds, by `Claims.size` (bounded by VERIFIED_CACHE_MAX_BYTES)."""
        return self._verified_bytes

    def _remember(self, key: bytes, claims: Claims, not_after: float, jwks_bound: bool) -> None:
        if key in self._verified:  # verified twice at once: keep one entry
            self._forget(key)
        self._verified[key] = (claims, not_after, jwks_bound)
        self._verified_bytes += claims.size
        while len(self._verified) > VERIFIED_CACHE_SIZE or self._verified_bytes > self._verified_max_bytes:
            _, (oldest, _, _) = self._verified.popitem(last=False)
            self._verified_bytes -= oldest.size

    def _forget(self, key: bytes) -> None:
        claims, _, _ = self._verified.pop(key)
        self._verified_bytes -= claims.size

    async def _verify_uncached(self, token: str) -> tuple[Claims, bool]:
        if token.startswith(_API_KEY_PREFIXES):
            raise unauthorized("not_a_user_token")
        # PyJWT encodes to UTF-8 itself; a lone surrogate would escape as UnicodeEncodeError.
        if not token.isascii():
            raise unauthorized("malformed_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized("malformed_token") from exc

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in _SUPPORTED_ALGS:
            raise unauthorized("unsupported_algorithm")
        key = await self._key_for(alg, header.get("kid"))
        payload = self._verify_signature(token, key, alg)
        self._refuse_api_keys(payload)
        self._validate_claims(token)
        return self._claims(payload), alg in _ASYMMETRIC_ALGS

    # --- keys -------------------------------------------------------------------------------

    async def _key_for(self, alg: str, kid: Any) -> str | jwt.PyJWK:
        if alg == "HS256":
            # Never a JWKS key: an HS256 token "signed" with the published public key would
            # otherwise verify (algorithm confusion).
            if self._secret is None:
                raise unauthorized("unsupported_algorithm")
            return self._secret
        if self._jwks is None:
            raise unauthorized("unsupported_algorithm")
        if kid is None:
            raise unauthorized("unknown_key")
        if not isinstance(kid, str):
            raise unauthorized("malformed_token")
        return await self._jwks.key_for(kid, alg)

    # --- token ------------------------------------------------------------------------------

    def _verify_signature(self, token: str, key: str | jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            payload: dict[str, Any] = jwt.decode(token, key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.InvalidSignatureError as exc:
            raise unauthorized("invalid_signature") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise unauthorized("unsupported_algorithm") from exc
        except jwt.InvalidKeyError as exc:
            # The key is ours, not the client's: make the misconfiguration visible.
            log.error("cannot verify %s tokens with the configured key: %s", alg, exc)
            raise unauthorized("invalid_signature") from exc
        except jwt.PyJWTError as exc:
            raise unauthorized("malformed_token") from exc
        return payload

    @staticmethod
    def _refuse_api_keys(payload: dict[str, Any]) -> None:
        role = payload.get("role")
        if isinstance(role, str) and role in _API_KEY_ROLES:
            raise unauthorized("not_a_user_token")

    def _validate_claims(self, token: str) -> None:
        try:
            jwt.decode(
                token,
                options=self._claim_checks,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError as exc:
            raise unauthorized("token_expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise unauthorized("token_not_yet_valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise unauthorized("invalid_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise unauthorized("invalid_issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            code = {"aud": "invalid_audience", "iss": "invalid_issuer"}.get(exc.claim, "invalid_claims")
            raise unauthorized(code) from exc
        except jwt.PyJWTError as exc:
            raise unauthorized("invalid_claims") from exc

    @staticmethod
    def _claims(payload: dict[str, Any]) -> Claims:
        sub = payload["sub"]  # present and a string: checked by PyJWT
        # Canonical form only: Postgres casts the same string in auth.uid(), and Python's
        # UUID() also accepts forms ("urn:uuid:...") that Postgres would reject.
        try:
            user_id = uuid.UUID(sub)
        except ValueError as exc:
            raise unauthorized("invalid_claims") from exc
        if str(user_id) != sub.lower():
            raise unauthorized("invalid_claims")
        role = payload.get("role")
        if role != _USER_ROLE:
            raise unauthorized("invalid_claims")
        email = payload.get("email")
        return Claims(
            sub=user_id,
            role=_USER_ROLE,
            # Supabase sends "" for users without an email (phone sign-in).
            email=email if isinstance(email, str) and email else None,
            raw=payload,
        )
