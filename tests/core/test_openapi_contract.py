"""The served OpenAPI schema as a contract client generators and fuzzers can rely on."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HTTP_METHODS = {m.lower() for m in METHODS} | {"trace"}


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _concrete(path: str) -> str:
    """A URL of the path template (405 is answered before any parameter is validated)."""
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_unsupported_method_gets_405_allowing_every_method_of_the_path(
    schema: dict[str, Any], app_client: httpx.AsyncClient
) -> None:
    """RFC 9110 15.5.6: a 405's Allow lists the resource's methods, not one route's."""
    checked = 0
    for path, item in schema["paths"].items():
        supported = {m.upper() for m in item if m in HTTP_METHODS}
        for method in METHODS:
            if method in supported:
                continue
            response = await app_client.request(method, _concrete(path))
            assert response.status_code == 405, (method, path, response.status_code)
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert allow == supported, (method, path, response.headers["allow"])
            if method != "HEAD":
                assert response.json()["error"]["code"] == "method_not_allowed"
            checked += 1
    assert checked > 50
