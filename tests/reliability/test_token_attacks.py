"""Token attacks against the running API (JWKS and HS256 both enabled): every one is a
401 with WWW-Authenticate, and none of them reads or writes anything.

What the Supabase API keys get: the anon key and the service-role key are API keys, not
user sessions. Sent as a bearer token they are refused like any other non-user token
(401 `not_a_user_token`); the service-role key is not a super-user here, because this
API acts only on behalf of signed-in users.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import respx
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from tests.support.factories import TEST_JWT_SECRET, create_user
from tests.support.tokens import SigningKey, hs256_with_key, jwks, raw_token

SUPABASE_URL = "https://attack-test.supabase.co"
ISSUER = SUPABASE_URL + "/auth/v1"
KEY = SigningKey("key-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
STRANGER = SigningKey("key-x", "ES256", ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
async def jwks_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={"supabase_url": SUPABASE_URL, "supabase_jwt_secret": SecretStr(TEST_JWT_SECRET)}
    )
    with respx.mock(assert_all_called=False) as mock:
        mock.get(ISSUER + "/.well-known/jwks.json").respond(json=jwks(KEY))
        app = create_app(configured)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client


def claims(user_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(user_id),
        "aud": "authenticated",
        "role": "authenticated",
        "exp": now + 600,
        "iat": now,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def attacks(user_id: uuid.UUID) -> dict[str, str]:
    now = int(time.time())
    api_key = {"iss": "supabase", "ref": "attack-test", "iat": now, "exp": now + 10 * 365 * 86400}
    return {
        "alg_none": raw_token({"alg": "none", "typ": "JWT"}, claims(user_id), b""),
        "hs256_signed_with_jwks_public_key": hs256_with_key(
            KEY.public_pem, {"alg": "HS256", "typ": "JWT", "kid": KEY.kid}, claims(user_id)
        ),
        "expired": KEY.sign(claims(user_id, exp=now - 3600, iat=now - 7200)),
        "nbf_in_the_future": KEY.sign(claims(user_id, nbf=now + 3600)),
        "wrong_aud": KEY.sign(claims(user_id, aud="anon")),
        "wrong_iss": KEY.sign(claims(user_id, iss="https://evil.supabase.co/auth/v1")),
        "no_sub": KEY.sign(claims(user_id, sub=None)),
        "role_anon": KEY.sign(claims(user_id, role="anon")),
        "anon_key": jwt.encode({**api_key, "role": "anon"}, TEST_JWT_SECRET, algorithm="HS256"),
        "service_role_key": jwt.encode(
            {**api_key, "role": "service_role"}, TEST_JWT_SECRET, algorithm="HS256"
        ),
        "unknown_kid": STRANGER.sign(claims(user_id)),
        "several_hundred_kb": KEY.sign(claims(user_id, padding="x" * 300_000)),
        "garbage": "eyJhbGciOi.garbage.###",
        "hs256_wrong_secret": jwt.encode(claims(user_id), "not-the-secret-" + "z" * 40, algorithm="HS256"),
    }


async def test_every_attack_is_401_and_touches_nothing(
    jwks_client: httpx.AsyncClient, owner: asyncpg.Connection
) -> None:
    victim = await create_user(owner)
    results: dict[str, tuple[int, str, bool]] = {}
    for name, token in attacks(victim.id).items():
        headers = {"Authorization": f"Bearer {token}"}
        create = await jwks_client.post("/avatars/me", json={"name": "Pwned"}, headers=headers)
        read = await jwks_client.get("/conversations", headers=headers)
        results[name] = (
            create.status_code,
            create.json()["error"]["code"],
            "WWW-Authenticate" in create.headers,
        )
        assert read.status_code == 401, name
    assert {name: r[0] for name, r in results.items()} == dict.fromkeys(results, 401)
    assert all(r[2] for r in results.values())
    assert results["anon_key"][1] == results["service_role_key"][1] == "not_a_user_token"
    assert results["several_hundred_kb"][1] == "token_too_large"
    assert await owner.fetchval("select count(*) from public.avatars where user_id = $1", victim.id) == 0

    # Control: a genuine ES256 session of the same user works.
    genuine = {"Authorization": f"Bearer {KEY.sign(claims(victim.id))}"}
    assert (await jwks_client.post("/avatars/me", json={"name": "Mine"}, headers=genuine)).status_code == 201
