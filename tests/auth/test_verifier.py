"""TokenVerifier without a database: HS256 secret, JWKS (ES256/RS256) faked with respx."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from avatar_chat.auth.jwks import UNKNOWN_KID_REFETCH_INTERVAL_S
from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.auth.verifier import (
    MAX_TOKEN_CHARS,
    VERIFIED_CACHE_MAX_BYTES,
    VERIFIED_CACHE_SIZE,
    TokenVerifier,
)
from avatar_chat.core.claims import Claims
from avatar_chat.core.errors import AppError, ServiceUnavailable, Unauthorized
from avatar_chat.core.settings import Settings
from tests.support.tokens import SigningKey, b64, hs256_with_key, jwks, raw_token

SECRET = "test-only-jwt-secret-with-at-least-32-bytes"
SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
ISSUER = SUPABASE_URL + "/auth/v1"
JWKS_URL = ISSUER + "/.well-known/jwks.json"
USER_ID = uuid.UUID("6f1d3c1e-6a4e-4c43-9a53-2f3f5b0b9c11")


# --- helpers ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def user_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(USER_ID),
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "ada@example.com",
        "role": "authenticated",
        "session_id": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(user_claims(**overrides), SECRET, algorithm="HS256")


def settings(*, secret: str | None = SECRET, url: str | None = SUPABASE_URL, **kwargs: Any) -> Settings:
    return Settings(_env_file=None, supabase_jwt_secret=secret, supabase_url=url, **kwargs)


def published(*keys: SigningKey) -> httpx.Response:
    """What JWKS_URL answers while these keys are published."""
    return httpx.Response(200, json=jwks(*keys))


JwksAnswer = httpx.Response | Exception
Make = Callable[..., TokenVerifier]  # the `make` fixture: a verifier with these settings
ServeJwks = Callable[..., respx.Route]  # the `serve_jwks` fixture


async def rejected(verifier: TokenVerifier, token: str, code: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        await verifier.verify(token)
    err = info.value
    assert err.code == code, err.message
    assert err.status_code == 401
    assert err.headers["WWW-Authenticate"].startswith('Bearer realm="avatar-chat"')
    return err


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def ec_key_2() -> SigningKey:
    return SigningKey("ec-2", "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def stranger(ec_key: SigningKey) -> SigningKey:
    """The EC key under a kid that JWKS does not publish."""
    return SigningKey("not-published", "ES256", ec_key.private)


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("rsa-1", "RS256", rsa.generate_private_key(65537, 2048))


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    # assert_all_called=False: many tests prove that JWKS is *not* fetched.
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
async def http(router: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def serve_jwks(router: respx.MockRouter) -> ServeJwks:
    """JWKS_URL's route: one answer given to every fetch, or several, one a fetch in turn."""

    def serve(*answers: JwksAnswer) -> respx.Route:
        route = router.get(JWKS_URL)
        if len(answers) > 1:
            route.side_effect = list(answers)
        elif isinstance(answers[0], httpx.Response):
            route.return_value = answers[0]
        else:
            route.side_effect = answers[0]
        return route

    return serve


@pytest.fixture
def jwks_route(serve_jwks: ServeJwks, ec_key: SigningKey, rsa_key: SigningKey) -> respx.Route:
    return serve_jwks(published(ec_key, rsa_key))


@pytest.fixture
def make(http: httpx.AsyncClient, clock: FakeClock) -> Make:
    def factory(**kwargs: Any) -> TokenVerifier:
        return TokenVerifier(settings(**kwargs), http, clock=clock)

    return factory


@pytest.fixture
def verifier(make: Make, jwks_route: respx.Route) -> TokenVerifier:
    return make()


# --- accepted tokens ------------------------------------------------------------------------


async def test_valid_hs256(verifier: TokenVerifier, jwks_route: respx.Route) -> None:
    claims = await verifier.verify(hs256())
    assert claims.sub == USER_ID
    assert claims.role == "authenticated"
    assert claims.email == "ada@example.com"
    assert claims.raw["iss"] == ISSUER
    assert jwks_route.call_count == 0  # HS256 never touches JWKS


async def test_minted_token_round_trips_without_supabase_url(make: Make) -> None:
    verifier = make(url=None)
    token = mint_access_token(SECRET, user_id=USER_ID, email="ada@example.com")
    claims = await verifier.verify(token)
    assert claims.sub == USER_ID
    assert claims.email == "ada@example.com"
    raw = claims.raw
    assert raw["iss"] == "avatar-chat-local"
    assert raw["aud"] == "authenticated"
    assert raw["exp"] - raw["iat"] == 3600
    assert raw["phone"] == ""
    assert raw["app_metadata"] == {"provider": "email", "providers": ["email"]}
    assert raw["user_metadata"] == {}
    assert raw["aal"] == "aal1"
    assert raw["amr"] == [{"method": "password", "timestamp": raw["iat"]}]
    assert uuid.UUID(raw["session_id"])
    assert raw["is_anonymous"] is False
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


async def test_minted_token_with_issuer_passes_issuer_check(verifier: TokenVerifier) -> None:
    token = mint_access_token(SECRET, user_id=USER_ID, email=None, issuer=ISSUER)
    claims = await verifier.verify(token)
    assert claims.email is None  # minted as "", the way Supabase sends it


def test_claims_as_json_is_compact() -> None:
    raw = {"sub": str(USER_ID), "role": "authenticated", "amr": [{"method": "password"}]}
    claims = Claims(sub=USER_ID, role="authenticated", email=None, raw=raw)
    assert claims.as_json() == json.dumps(raw, separators=(",", ":"))
    assert " " not in claims.as_json()
    assert "raw" not in repr(claims)
    assert hash(claims) == hash(Claims(sub=USER_ID, role="authenticated", email=None, raw={}))


@pytest.mark.parametrize("key_name", ["ec_key", "rsa_key"])
async def test_valid_asymmetric(
    request: pytest.FixtureRequest, verifier: TokenVerifier, jwks_route: respx.Route, key_name: str
) -> None:
    key: SigningKey = request.getfixturevalue(key_name)
    claims = await verifier.verify(key.sign(user_claims()))
    assert claims.sub == USER_ID
    assert jwks_route.call_count == 1


async def test_expired_within_leeway_is_accepted(verifier: TokenVerifier) -> None:
    claims = await verifier.verify(hs256(exp=int(time.time()) - 5))
    assert claims.sub == USER_ID


async def test_audience_list_containing_ours_is_accepted(verifier: TokenVerifier) -> None:
    claims = await verifier.verify(hs256(aud=["other", "authenticated"]))
    assert claims.sub == USER_ID


# --- JWKS cache -----------------------------------------------------------------------------


async def test_jwks_is_cached(
    verifier: TokenVerifier, jwks_route: respx.Route, ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    await verifier.verify(ec_key.sign(user_claims()))
    await verifier.verify(rsa_key.sign(user_claims()))
    await verifier.verify(ec_key.sign(user_claims()))
    assert jwks_route.call_count == 1


async def test_concurrent_verifies_share_one_fetch(
    make: Make, router: respx.MockRouter, ec_key: SigningKey
) -> None:
    async def slow_jwks(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)  # keep the fetch in flight while the others arrive
        return published(ec_key)

    route = router.get(JWKS_URL).mock(side_effect=slow_jwks)
    verifier = make()
    token = ec_key.sign(user_claims())
    results = await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert {claims.sub for claims in results} == {USER_ID}
    assert route.call_count == 1


async def test_cache_expires_after_ttl(
    make: Make, jwks_route: respx.Route, clock: FakeClock, ec_key: SigningKey
) -> None:
    verifier = make(jwks_cache_ttl_s=60)
    token = ec_key.sign(user_claims())
    await verifier.verify(token)
    clock.advance(59)
    await verifier.verify(token)
    assert jwks_route.call_count == 1
    clock.advance(2)
    await verifier.verify(token)
    assert jwks_route.call_count == 2


async def test_expired_cache_drops_removed_keys(
    make: Make, serve_jwks: ServeJwks, clock: FakeClock, ec_key: SigningKey, ec_key_2: SigningKey
) -> None:
    route = serve_jwks(published(ec_key, ec_key_2), published(ec_key_2))
    verifier = make(jwks_cache_ttl_s=60)
    await verifier.verify(ec_key.sign(user_claims()))
    clock.advance(61)
    await rejected(verifier, ec_key.sign(user_claims()), "unknown_key")
    assert route.call_count == 2


async def test_unknown_kid_refetches_once_for_key_rotation(
    make: Make, serve_jwks: ServeJwks, ec_key: SigningKey, ec_key_2: SigningKey
) -> None:
    route = serve_jwks(published(ec_key), published(ec_key, ec_key_2))
    verifier = make()
    await verifier.verify(ec_key.sign(user_claims()))
    claims = await verifier.verify(ec_key_2.sign(user_claims()))
    assert claims.sub == USER_ID
    assert route.call_count == 2


async def test_unknown_kid_after_refetch_is_rejected_and_rate_limited(
    make: Make, serve_jwks: ServeJwks, clock: FakeClock, ec_key: SigningKey, stranger: SigningKey
) -> None:
    route = serve_jwks(published(ec_key))
    verifier = make()
    await verifier.verify(ec_key.sign(user_claims()))
    assert route.call_count == 1

    await rejected(verifier, stranger.sign(user_claims()), "unknown_key")
    assert route.call_count == 2  # one refetch

    # A flood of random kids inside the interval is answered from the cache.
    floods = [SigningKey(f"random-{i}", "ES256", ec_key.private) for i in range(50)]
    outcomes = await asyncio.gather(
        *(verifier.verify(k.sign(user_claims())) for k in floods), return_exceptions=True
    )
    assert all(isinstance(o, Unauthorized) and o.code == "unknown_key" for o in outcomes)
    assert route.call_count == 2

    clock.advance(UNKNOWN_KID_REFETCH_INTERVAL_S)
    await rejected(verifier, stranger.sign(user_claims()), "unknown_key")
    assert route.call_count == 3


async def test_unknown_kid_on_cold_cache_does_not_fetch_twice(
    verifier: TokenVerifier, jwks_route: respx.Route, stranger: SigningKey
) -> None:
    await rejected(verifier, stranger.sign(user_claims()), "unknown_key")
    assert jwks_route.call_count == 1


async def test_asymmetric_token_without_kid(verifier: TokenVerifier, ec_key: SigningKey) -> None:
    token = jwt.encode(user_claims(), ec_key.private, algorithm="ES256")
    await rejected(verifier, token, "unknown_key")


async def test_empty_jwks_means_unknown_key_not_outage(
    make: Make, serve_jwks: ServeJwks, ec_key: SigningKey
) -> None:
    # What a project still on the legacy HS256 secret publishes.
    serve_jwks(published())
    await rejected(make(), ec_key.sign(user_claims()), "unknown_key")


# --- JWKS outages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(503),
        httpx.Response(500, text="oops"),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json={"no": "keys"}),
    ],
    ids=["connect", "timeout", "503", "500", "not-json", "no-keys"],
)
async def test_jwks_down_without_cache_is_503(
    make: Make, serve_jwks: ServeJwks, ec_key: SigningKey, failure: Exception | httpx.Response
) -> None:
    serve_jwks(failure)
    verifier = make()
    with pytest.raises(ServiceUnavailable) as info:
        await verifier.verify(ec_key.sign(user_claims()))
    assert info.value.code == "jwks_unavailable"
    assert info.value.status_code == 503
    assert "Retry-After" in info.value.headers


async def test_jwks_outage_is_not_retried_per_request(
    make: Make, serve_jwks: ServeJwks, clock: FakeClock, ec_key: SigningKey
) -> None:
    route = serve_jwks(httpx.ConnectError("down"))
    verifier = make()
    token = ec_key.sign(user_claims())
    for _ in range(5):
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(token)
    assert route.call_count == 1

    clock.advance(10)
    route.side_effect = None
    route.return_value = published(ec_key)
    assert (await verifier.verify(token)).sub == USER_ID
    assert route.call_count == 2


async def test_jwks_outage_serves_stale_cache(
    make: Make, serve_jwks: ServeJwks, clock: FakeClock, ec_key: SigningKey
) -> None:
    route = serve_jwks(published(ec_key), httpx.Response(502))
    verifier = make(jwks_cache_ttl_s=60)
    token = ec_key.sign(user_claims())
    await verifier.verify(token)
    clock.advance(61)
    assert (await verifier.verify(token)).sub == USER_ID
    assert (await verifier.verify(token)).sub == USER_ID
    assert route.call_count == 2  # the failed refresh is not retried on every request


async def test_hs256_works_while_jwks_is_down(make: Make, serve_jwks: ServeJwks) -> None:
    route = serve_jwks(httpx.ConnectError("down"))
    assert (await make().verify(hs256())).sub == USER_ID
    assert route.call_count == 0


# --- rejected tokens ------------------------------------------------------------------------


async def test_missing_token(verifier: TokenVerifier) -> None:
    err = await rejected(verifier, "", "missing_token")
    assert 'error="invalid_request"' in err.headers["WWW-Authenticate"]


async def test_huge_token_is_rejected_before_parsing(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_parse(*_: object, **__: object) -> None:
        raise AssertionError("parsed a token that is over the size limit")

    monkeypatch.setattr(jwt, "get_unverified_header", must_not_parse)
    monkeypatch.setattr(jwt, "decode", must_not_parse)
    head = b64(json.dumps({"alg": "HS256"}).encode())
    err = await rejected(verifier, head + "." + "A" * 300_000 + ".sig", "token_too_large")
    assert 'error="invalid_token"' in err.headers["WWW-Authenticate"]


async def test_token_at_the_size_limit_is_parsed(verifier: TokenVerifier) -> None:
    await rejected(verifier, "x" * MAX_TOKEN_CHARS, "malformed_token")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c",
        "....",
        " ",
        "Bearer x.y.z",
        "é.é.é",
        "\ud800.x.y",
        raw_token(b"not json", {"sub": "x"}),
        raw_token([1, 2], {"sub": "x"}),
        raw_token({"alg": "HS256", "kid": 7}, {"sub": "x"}),
    ],
    ids=[
        "word",
        "two-parts",
        "bad-base64",
        "dots",
        "space",
        "scheme",
        "non-ascii",
        "surrogate",
        "header-not-json",
        "header-not-object",
        "kid-not-string",
    ],
)
async def test_malformed(verifier: TokenVerifier, token: str) -> None:
    await rejected(verifier, token, "malformed_token")


async def test_signed_payload_that_is_not_json(verifier: TokenVerifier) -> None:
    token = jwt.api_jws.encode(b"not json", SECRET, algorithm="HS256")
    await rejected(verifier, token, "malformed_token")


async def test_expired(verifier: TokenVerifier) -> None:
    await rejected(verifier, hs256(exp=int(time.time()) - 60), "token_expired")


async def test_minted_with_negative_ttl_is_expired(verifier: TokenVerifier) -> None:
    token = mint_access_token(SECRET, user_id=USER_ID, email=None, ttl_s=-60, issuer=ISSUER)
    await rejected(verifier, token, "token_expired")


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_not_yet_valid(verifier: TokenVerifier, claim: str) -> None:
    await rejected(verifier, hs256(**{claim: int(time.time()) + 600}), "token_not_yet_valid")


async def test_wrong_hs256_secret(verifier: TokenVerifier) -> None:
    token = jwt.encode(user_claims(), "another-secret-that-is-at-least-32-bytes", algorithm="HS256")
    await rejected(verifier, token, "invalid_signature")


async def test_tampered_asymmetric_payload(verifier: TokenVerifier, ec_key: SigningKey) -> None:
    header, _, signature = ec_key.sign(user_claims()).split(".")
    forged = b64(json.dumps(user_claims(sub=str(uuid.uuid4()))).encode())
    await rejected(verifier, f"{header}.{forged}.{signature}", "invalid_signature")


async def test_asymmetric_signed_by_another_key_with_a_published_kid(
    verifier: TokenVerifier, ec_key: SigningKey
) -> None:
    impostor = SigningKey(ec_key.kid, "ES256", ec.generate_private_key(ec.SECP256R1()))
    await rejected(verifier, impostor.sign(user_claims()), "invalid_signature")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "None"},
        {"typ": "JWT"},
        {"alg": ["HS256"]},
        {"alg": "HS512"},
        {"alg": "RS512", "kid": "rsa-1"},
        {"alg": "PS256", "kid": "rsa-1"},
        {"alg": "ES384", "kid": "ec-1"},
        {"alg": "EdDSA", "kid": "ec-1"},
    ],
    ids=lambda h: str(h.get("alg")),
)
async def test_unsupported_algorithm(
    verifier: TokenVerifier, jwks_route: respx.Route, header: dict[str, Any]
) -> None:
    await rejected(verifier, raw_token(header, user_claims(), b""), "unsupported_algorithm")
    assert jwks_route.call_count == 0


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key"])
async def test_algorithm_confusion_hs256_signed_with_public_key(
    request: pytest.FixtureRequest, make: Make, jwks_route: respx.Route, key_name: str
) -> None:
    key: SigningKey = request.getfixturevalue(key_name)
    token = hs256_with_key(key.public_pem, {"alg": "HS256", "kid": key.kid}, user_claims())
    await rejected(make(), token, "invalid_signature")
    await rejected(make(secret=None), token, "unsupported_algorithm")
    assert jwks_route.call_count == 0


async def test_header_alg_must_match_the_published_key(
    verifier: TokenVerifier, jwks_route: respx.Route, rsa_key: SigningKey
) -> None:
    # An RS256 token naming the EC key's kid: the key cannot verify RS256.
    mislabelled = SigningKey("ec-1", "RS256", rsa_key.private)
    await rejected(verifier, mislabelled.sign(user_claims()), "unsupported_algorithm")
    assert jwks_route.call_count == 1  # the kid is known: no refetch


async def test_encryption_keys_are_not_used_for_signatures(
    make: Make, serve_jwks: ServeJwks, ec_key: SigningKey
) -> None:
    serve_jwks(httpx.Response(200, json={"keys": [{**ec_key.jwk, "use": "enc"}]}))
    await rejected(make(), ec_key.sign(user_claims()), "unsupported_algorithm")


@pytest.mark.parametrize("aud", ["anon", "service_role", ["a", "b"], None])
async def test_wrong_audience(verifier: TokenVerifier, aud: Any) -> None:
    await rejected(verifier, hs256(aud=aud), "invalid_audience")


@pytest.mark.parametrize("iss", ["https://evil.supabase.co/auth/v1", "supabase", None])
async def test_wrong_issuer(verifier: TokenVerifier, iss: str | None) -> None:
    await rejected(verifier, hs256(iss=iss), "invalid_issuer")


async def test_issuer_is_not_checked_without_supabase_url(make: Make) -> None:
    claims = await make(url=None).verify(hs256(iss="anything"))
    assert claims.sub == USER_ID


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": None},
        {"exp": None},
        {"sub": "not-a-uuid"},
        {"sub": 42},
        {"sub": ""},
        {"sub": "urn:uuid:" + str(USER_ID)},
        {"sub": USER_ID.hex},
        {"exp": "tomorrow"},
        {"role": None},
        {"role": "supabase_admin"},
        {"role": ["authenticated"]},
    ],
    ids=[
        "no-sub",
        "no-exp",
        "sub-not-uuid",
        "sub-int",
        "sub-empty",
        "sub-urn",
        "sub-hex",
        "exp-string",
        "no-role",
        "role-admin",
        "role-list",
    ],
)
async def test_invalid_claims(verifier: TokenVerifier, overrides: dict[str, Any]) -> None:
    await rejected(verifier, hs256(**overrides), "invalid_claims")


async def test_uppercase_uuid_sub_is_accepted(verifier: TokenVerifier) -> None:
    claims = await verifier.verify(hs256(sub=str(USER_ID).upper()))
    assert claims.sub == USER_ID


async def test_user_shaped_token_with_role_anon(verifier: TokenVerifier) -> None:
    err = await rejected(verifier, hs256(role="anon"), "not_a_user_token")
    assert "API key" in err.message


@pytest.mark.parametrize("role", ["anon", "service_role"])
async def test_legacy_api_keys_are_not_user_sessions(verifier: TokenVerifier, role: str) -> None:
    # The shape of Supabase's legacy anon / service_role keys: no sub, no aud, iss "supabase".
    now = int(time.time())
    api_key = {"iss": "supabase", "ref": "abcdefghijklmnop", "role": role, "iat": now}
    token = jwt.encode({**api_key, "exp": now + 10 * 365 * 86400}, SECRET, algorithm="HS256")
    err = await rejected(verifier, token, "not_a_user_token")
    assert "API key" in err.message


async def test_forged_api_key_is_a_signature_error(verifier: TokenVerifier) -> None:
    token = jwt.encode(
        {"iss": "supabase", "role": "service_role", "exp": int(time.time()) + 60},
        "not-the-project-secret-but-32-bytes-long",
        algorithm="HS256",
    )
    await rejected(verifier, token, "invalid_signature")


@pytest.mark.parametrize("key", ["sb_publishable_abc123", "sb_secret_abc123"])
async def test_new_style_api_keys_are_not_user_sessions(verifier: TokenVerifier, key: str) -> None:
    await rejected(verifier, key, "not_a_user_token")


async def test_hs256_without_configured_secret(make: Make, jwks_route: respx.Route) -> None:
    await rejected(make(secret=None), hs256(), "unsupported_algorithm")
    assert jwks_route.call_count == 0


async def test_empty_secret_counts_as_not_configured(make: Make) -> None:
    await rejected(make(secret=""), hs256(), "unsupported_algorithm")


async def test_asymmetric_without_supabase_url(
    make: Make, jwks_route: respx.Route, ec_key: SigningKey
) -> None:
    await rejected(make(url=None), ec_key.sign(user_claims()), "unsupported_algorithm")
    assert jwks_route.call_count == 0


async def test_every_failure_is_an_app_error(verifier: TokenVerifier) -> None:
    # Whatever the input, verify raises only our errors (rendered by the error handler).
    for token in ["a" * 20, "e30.e30.", "e30.e30.e30", raw_token({"alg": "HS256"}, "str")]:
        with pytest.raises(AppError):
            await verifier.verify(token)


async def test_verified_tokens_are_remembered_but_never_past_their_exp() -> None:
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings(url=None, jwt_leeway_s=0), http)
        token = hs256(exp=int(time.time()) + 1)
        first = await verifier.verify(token)
        assert await verifier.verify(token) is first  # served from the cache
        await asyncio.sleep(1.2)
        await rejected(verifier, token, "token_expired")


def _padded_token(i: int, size: int) -> str:
    """A valid token padded through user_metadata (which Supabase users can set
    themselves) to about `size` characters."""
    metadata = {"k1": 1, "bio": "x" * (size * 3 // 4)}
    return hs256(sub=str(uuid.UUID(int=i + 1)), user_metadata=metadata)


async def test_the_verified_cache_is_bounded_in_bytes_whatever_users_put_in_their_tokens() -> None:
    """1,000 valid tokens padded to ~16 KiB (39 MB held before the fix) against a 4 MiB
    budget: the cache keeps what its budget allows, and the memory the verifier holds
    afterwards stays within it (the token text itself is not kept: entries are keyed by
    its SHA-256, and the claims only as their JSON)."""
    budget = 4 * 1024 * 1024
    assert budget < VERIFIED_CACHE_MAX_BYTES
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings(url=None), http, cache_max_bytes=budget)
        tokens = [_padded_token(i, 15_000) for i in range(1000)]
        assert all(14_000 < len(token) <= MAX_TOKEN_CHARS for token in tokens)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for token in tokens:
                await verifier.verify(token)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert budget - 20_000 < verifier.cached_bytes <= budget
        assert held < budget + 1024 * 1024, f"{held / 2**20:.1f} MiB"
        # The newest are served from the cache; the oldest were let go and verify again.
        newest = await verifier.verify(tokens[-1])
        assert await verifier.verify(tokens[-1]) is newest
        assert newest.raw["user_metadata"]["k1"] == 1


async def test_ordinary_tokens_fill_the_cache_by_count() -> None:
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings(url=None), http)
        tokens = [hs256(sub=str(uuid.UUID(int=i + 1))) for i in range(VERIFIED_CACHE_SIZE + 10)]
        first = [await verifier.verify(token) for token in tokens]
        assert await verifier.verify(tokens[-1]) is first[-1]
        assert await verifier.verify(tokens[10]) is first[10]  # still cached: within the count
        assert await verifier.verify(tokens[0]) is not first[0]  # the oldest went, by count
        assert verifier.cached_bytes <= VERIFIED_CACHE_SIZE * 2000


def test_the_jwt_library_refuses_an_empty_hmac_key() -> None:
    """Behind our own check (an empty secret counts as none), PyJWT itself refuses one from
    2.13 on: pyproject.toml's floor keeps it so."""
    forged = hs256_with_key(b"", {"alg": "HS256", "typ": "JWT"}, user_claims())
    with pytest.raises(jwt.InvalidKeyError):
        jwt.decode(forged, "", algorithms=["HS256"], audience="authenticated")
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(user_claims(), b"", algorithm="HS256")
