"""Auth as a client sees it: every protected route refuses bad tokens with 401 + WWW-Authenticate."""

from __future__ import annotations

import uuid

import httpx
import jwt
import pytest

from avatar_chat.auth.tokens import mint_access_token
from tests.support.factories import TEST_JWT_SECRET, User

PROTECTED = [
    ("GET", "/avatars/me"),
    ("POST", "/avatars/me"),
    ("PATCH", "/avatars/me"),
    ("PATCH", "/avatars/me/persona"),
    ("DELETE", "/avatars/me"),
]


def bad_tokens(user: User) -> dict[str, str | None]:
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": mint_access_token(TEST_JWT_SECRET, user_id=user.id, email=user.email, ttl_s=-120),
        "wrong_secret": mint_access_token("another-secret-" + "y" * 40, user_id=user.id, email=user.email),
        "wrong_audience": mint_access_token(
            TEST_JWT_SECRET, user_id=user.id, email=user.email, audience="anon"
        ),
        "anon_role": mint_access_token(
            TEST_JWT_SECRET, user_id=user.id, email=user.email, extra={"role": "anon"}
        ),
        "alg_none": jwt.encode(
            {"sub": str(user.id), "role": "authenticated", "aud": "authenticated", "exp": 4102444800},
            key="",
            algorithm="none",
        ),
    }


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_routes_refuse_bad_tokens(
    app_client: httpx.AsyncClient, user: User, method: str, path: str
) -> None:
    for name, token in bad_tokens(user).items():
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        response = await app_client.request(method, path, json={"name": "X"}, headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert response.json()["error"]["code"], name
    assert (
        await app_client.get("/avatars/me", headers=user.headers)
    ).status_code == 404  # nothing was created


async def test_basic_auth_scheme_is_not_a_token(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/avatars/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"


async def test_valid_token_for_unknown_user_creates_nothing(app_client: httpx.AsyncClient) -> None:
    ghost = uuid.uuid4()
    token = mint_access_token(TEST_JWT_SECRET, user_id=ghost, email="ghost@example.test")
    response = await app_client.post(
        "/avatars/me", json={"name": "Ghost"}, headers={"Authorization": f"Bearer {token}"}
    )
    # Its signature is fine, but no such user exists: refused as a bad token (act_as).
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "user_not_found"


async def test_health_needs_no_token(app_client: httpx.AsyncClient) -> None:
    assert (await app_client.get("/health")).json() == {"status": "ok"}
    assert (await app_client.get("/ready")).status_code == 200
