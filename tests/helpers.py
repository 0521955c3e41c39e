"""Helpers every test module may use (test modules never import each other)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from avatar_chat.main import create_app
from avatar_chat.state import AppState
from tests.factories import User

# What Postgres appends to an error's text; a message written for people never has it.
_DATABASE_INTERNALS = ("DETAIL:", "HINT:", "CONTEXT:", "SQLSTATE", "PL/pgSQL", "\n")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The one error shape, with this status and code, a message written for people, and
    the answer's request id (also in its X-Request-ID header)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert not any(internal in message for internal in _DATABASE_INTERNALS), message
    assert body["error"]["request_id"] == response.headers["x-request-id"], response.headers


@asynccontextmanager
async def as_role(
    conn: asyncpg.Connection, role: str, claims: dict[str, str] | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """What PostgREST does per request; rolled back at the end whatever happened."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(
            "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true)",
            role,
            json.dumps(claims or {"role": role}),
        )
        yield conn
    finally:
        await tx.rollback()


def claims_of(user: User) -> dict[str, str]:
    return {"sub": str(user.id), "role": "authenticated", "aud": "authenticated"}


def with_database(dsn: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    """An empty database on the test server, dropped afterwards (also on failure)."""
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'create database "{name}"')
        try:
            yield with_database(dsn, name)
        finally:
            await admin.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await admin.close()


async def app_with_provider(
    settings: Settings, base_url: str, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "llm_base_url": base_url,
            "llm_api_key": SecretStr("test-key"),
            "llm_timeout_s": 0.5,
            "llm_stall_timeout_s": 0.5,
            "llm_max_retries": 1,
            **overrides,
        }
    )
    async with own_app(configured) as (client, _):
        yield client


@asynccontextmanager
async def own_app(
    settings: Settings, *, base_url: str = "http://test", **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """An app (a worker) of its own, with these settings changed, and a client of it."""
    app = create_app(settings.model_copy(update=overrides))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client, app.state.resources


def metric_samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus text exposition as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    """One sample's value, None when there is no such sample."""
    return samples.get((name, frozenset(labels.items())))
