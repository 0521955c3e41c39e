"""Request ids, logs and metrics in-process (ASGITransport, one app, no multiprocess files).

Each test gets an app of its own, so its metrics count only its own traffic. Real workers
and their one merged view: tests/reliability/test_observability.py."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from pydantic import SecretStr

from avatar_chat.core.logs import RequestIdFilter, TextFormatter
from avatar_chat.core.settings import Settings
from avatar_chat.core.tasks import TaskTracker
from avatar_chat.main import create_app
from avatar_chat.state import AppState
from tests.support.assertions import assert_error
from tests.support.factories import User, away_from_minute_boundary, create_avatar, create_conversation, send
from tests.support.metrics import metric, metric_samples

GENERATED = re.compile(r"[0-9a-f]{32}")
TURN = "/conversations/{conversation_id}/messages"

Observed = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, AppState]]]


@pytest.fixture
def observed(settings: Settings) -> Observed:
    """A fresh app (its own metrics) with `overrides` of the test settings; `setup` may add
    routes before it starts."""

    @asynccontextmanager
    async def run(
        setup: Callable[[FastAPI], None] | None = None, **overrides: object
    ) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
        app = create_app(settings.model_copy(update=overrides))
        if setup is not None:
            setup(app)
        async with LifespanManager(app) as manager:
            # raise_app_exceptions=False: a 500 reaches the client as a server would send it.
            transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client, app.state.resources

    return run


async def scrape(
    client: httpx.AsyncClient, token: str | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return metric_samples(response.text)


def requests(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], method: str, route: str, status: int
) -> float:
    value = metric(
        samples,
        "avatar_chat_http_request_duration_seconds_count",
        method=method,
        route=route,
        status=str(status),
    )
    return value or 0.0


# --------------------------------------------------------------------------- request ids


async def test_every_answer_carries_a_request_id_and_errors_quote_it(observed: Observed, user: User) -> None:
    async with observed() as (client, _):
        ok = await client.get("/health")
        assert GENERATED.fullmatch(ok.headers["x-request-id"])
        assert_error(await client.get("/no/such/route"), 404, "not_found")
        assert_error(await client.get("/avatars/me"), 401, "missing_token")
        assert_error(await client.get("/avatars/me", headers=user.headers), 404, "avatar_not_found")
        bad = await client.post("/avatars/me", json={"name": ""}, headers=user.headers)
        assert_error(bad, 422, "validation_failed")
        # Refused by the body limit before any route: still an id, in the header and the body.
        huge = await client.post(
            "/avatars/me", content=b"{}", headers={**user.headers, "Content-Length": "999999"}
        )
        assert_error(huge, 413, "payload_too_large")
        await create_avatar(client, user)
        conversation = await create_conversation(client, user, title="ids")
        async with client.stream(
            "POST",
            f"/conversations/{conversation['id']}/messages",
            json={"content": "streamed"},
            headers={**user.headers, "Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 201
            assert GENERATED.fullmatch(stream.headers["x-request-id"])
            assert "event: done" in "".join([chunk async for chunk in stream.aiter_text()])
        ids = {ok.headers["x-request-id"], bad.headers["x-request-id"], huge.headers["x-request-id"]}
        assert len(ids) == 3  # one per request


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("client-trace-42", True),
        ("0af7651916cd43dd8448eb211c80319c", True),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", False),  # ';' is not accepted
        ("has space", False),
        ("x" * 129, False),
        ("", False),
    ],
)
async def test_an_incoming_request_id_is_kept_only_if_sane(
    app_client: httpx.AsyncClient, sent: str, kept: bool
) -> None:
    answer = await app_client.get("/health", headers={"X-Request-ID": sent})
    returned = answer.headers["x-request-id"]
    if kept:
        assert returned == sent
    else:
        assert returned != sent and GENERATED.fullmatch(returned)


async def test_non_ascii_request_id_is_replaced(app_client: httpx.AsyncClient) -> None:
    answer = await app_client.get("/health", headers=[(b"X-Request-ID", "ünï".encode())])
    assert GENERATED.fullmatch(answer.headers["x-request-id"])


async def test_a_500_and_background_work_log_with_the_request_id(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    """An unhandled error is answered 500 in the one error shape with the id; its traceback
    is logged with it; so is what a task spawned by the request logs later."""

    def setup(app: FastAPI) -> None:
        async def boom() -> None:
            raise RuntimeError("a bug")

        async def spawn(request: Request) -> dict[str, str]:
            async def later() -> None:
                await asyncio.sleep(0.01)
                logging.getLogger("avatar_chat.test").warning("logged by a background task")

            tasks: TaskTracker = request.state.tasks
            tasks.spawn(later(), name="test")  # runs on after the answer
            return {}

        app.add_api_route("/test/boom", boom)
        app.add_api_route("/test/spawn", spawn)

    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    async with observed(setup) as (client, _):
        failed = await client.get("/test/boom", headers={"X-Request-ID": "boom-1"})
        assert_error(failed, 500, "internal_error")
        assert failed.json()["error"]["request_id"] == "boom-1"
        spawned = await client.get("/test/spawn", headers={"X-Request-ID": "spawn-1"})
        assert spawned.status_code == 200
        await asyncio.sleep(0.2)
    by_message = {r.getMessage(): r for r in caplog.records}
    unhandled = by_message["unhandled error"]
    assert unhandled.exc_info is not None and getattr(unhandled, "request_id", None) == "boom-1"
    assert getattr(by_message["logged by a background task"], "request_id", None) == "spawn-1"
    access = [r for r in caplog.records if r.name == "avatar_chat.access"]
    assert {(getattr(r, "request_id", None), getattr(r, "status", None)) for r in access} >= {
        ("boom-1", 500),
        ("spawn-1", 200),
    }


# --------------------------------------------------------------------------- metrics


async def test_metrics_count_real_traffic(observed: Observed, user: User, owner: asyncpg.Connection) -> None:
    async with observed() as (client, state):
        await create_avatar(client, user)
        for personality in ("witty", "caring", "playful"):
            patched = await client.patch(
                "/avatars/me/persona", json={"personality": personality}, headers=user.headers
            )
            assert patched.status_code == 200
        conversation = await create_conversation(client, user, title="metrics")  # no title task
        cid = conversation["id"]
        assert (await send(client, user, cid, "one")).status_code == 201  # nothing cached yet
        assert (await send(client, user, cid, "two")).status_code == 201  # both cached
        # The dashboard changes the avatar: the cached persona is stale and is reloaded.
        await owner.execute("update public.avatars set backstory = 'edited' where user_id = $1", user.id)
        assert (await send(client, user, cid, "three")).status_code == 201
        assert (await send(client, user, cid, "four", key="k-1")).status_code == 201
        replay = await send(client, user, cid, "four", key="k-1")
        assert (replay.status_code, replay.headers.get("idempotent-replayed")) == (201, "true")
        assert (await client.get("/no/such/route")).status_code == 404
        assert (await client.get(f"/conversations/{cid}/nothing-here")).status_code == 404
        samples = await scrape(client)
        assert state.store.stats.avatar.stale == 1

    assert requests(samples, "POST", "/avatars/me", 201) == 1
    assert requests(samples, "PATCH", "/avatars/me/persona", 200) == 3
    assert requests(samples, "POST", "/conversations", 201) == 1
    assert requests(samples, "POST", TURN, 201) == 5
    assert requests(samples, "GET", "unmatched", 404) == 2  # raw paths never become labels
    assert not any(
        name.startswith("avatar_chat_http")
        and dict(labels).get("route", "").startswith("/conversations/")
        and cid in dict(labels)["route"]
        for name, labels in samples
    )
    turns = {
        o: metric(samples, "avatar_chat_chat_turns_total", outcome=o)
        for o in ("complete", "replayed", "refused", "failed")
    }
    assert turns == {"complete": 4, "replayed": 1, "refused": 0, "failed": 0}
    lookups = {
        (kind, result): metric(samples, "avatar_chat_session_store_lookups_total", kind=kind, result=result)
        for kind in ("avatar", "window")
        for result in ("hit", "miss", "stale")
    }
    assert lookups == {
        ("avatar", "miss"): 1,
        ("avatar", "hit"): 2,
        ("avatar", "stale"): 1,
        ("window", "miss"): 1,
        ("window", "hit"): 3,
        ("window", "stale"): 0,
    }
    assert metric(samples, "avatar_chat_session_store_entries", kind="avatar") == 1
    assert metric(samples, "avatar_chat_session_store_entries", kind="window") == 1
    assert metric(samples, "avatar_chat_llm_first_token_seconds_count") == 4
    assert metric(samples, "avatar_chat_llm_reply_duration_seconds_count") == 4
    assert metric(samples, "avatar_chat_chat_replies_taken_over_total") == 0
    # The pool: one worker's size and use, waits for every round trip, no errors.
    assert metric(samples, "avatar_chat_db_pool_max_connections") == 10
    open_connections = metric(samples, "avatar_chat_db_pool_connections")
    assert open_connections is not None and 1 <= open_connections <= 10
    in_use = metric(samples, "avatar_chat_db_pool_connections_in_use")
    assert in_use is not None and 0 <= in_use <= open_connections
    acquired = metric(samples, "avatar_chat_db_pool_acquire_duration_seconds_count")
    assert acquired is not None and acquired >= 1 + 3 + 1 + 5 * 1 + 4  # each call at least once
    for reason in ("timeout", "unavailable"):
        assert metric(samples, "avatar_chat_db_pool_acquire_errors_total", reason=reason) == 0
    assert metric(samples, "avatar_chat_workers") == 1


async def test_rate_limit_refusals_and_provider_failures_are_counted(
    observed: Observed, user: User, owner: asyncpg.Connection
) -> None:
    async with observed() as (client, _):
        await create_avatar(client, user)
        conversation = await create_conversation(client, user, title="limits")
        await away_from_minute_boundary()
        await owner.execute("select avatar_chat.configure_limits(1, 0)")
        try:
            assert (await send(client, user, conversation["id"], "first")).status_code == 201
            assert_error(await send(client, user, conversation["id"], "second"), 429, "rate_limited")
        finally:
            await owner.execute("select avatar_chat.configure_limits(0, 0)")
        samples = await scrape(client)
    assert metric(samples, "avatar_chat_rate_limit_refusals_total", code="rate_limited") == 1
    assert metric(samples, "avatar_chat_rate_limit_refusals_total", code="too_many_streams") == 0
    assert metric(samples, "avatar_chat_chat_turns_total", outcome="refused") == 1
    assert metric(samples, "avatar_chat_chat_turns_total", outcome="complete") == 1
    assert requests(samples, "POST", TURN, 429) == 1


async def test_a_provider_failure_is_counted_by_code(observed: Observed, user: User) -> None:
    from tests.fakes.openai_server import FakeOpenAIServer

    async with (
        FakeOpenAIServer() as fake,
        observed(
            llm_base_url=fake.base_url,
            llm_api_key=SecretStr("sk-test"),
            llm_max_retries=0,
            llm_timeout_s=2,
        ) as (client, _),
    ):
        await create_avatar(client, user)
        conversation = await create_conversation(client, user, title="faults")
        failed = await send(client, user, conversation["id"], "[[fake:status_500]] hello")
        assert_error(failed, 502, "provider_error")
        assert (await send(client, user, conversation["id"], "fine")).status_code == 201
        samples = await scrape(client)
    assert metric(samples, "avatar_chat_llm_failures_total", code="provider_error") == 1
    assert metric(samples, "avatar_chat_chat_turns_total", outcome="failed") == 1
    assert metric(samples, "avatar_chat_chat_turns_total", outcome="complete") == 1
    assert metric(samples, "avatar_chat_llm_first_token_seconds_count") == 1
    assert metric(samples, "avatar_chat_llm_reply_duration_seconds_count") == 2
    assert requests(samples, "POST", TURN, 502) == 1


async def test_metrics_token_is_required_when_set(observed: Observed) -> None:
    async with observed(metrics_token=SecretStr("s3cret-metrics")) as (client, _):
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, "unauthorized")
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        samples = await scrape(client, "s3cret-metrics")
    assert requests(samples, "GET", "/metrics", 401) == 2


async def test_metrics_disabled(observed: Observed) -> None:
    async with observed(metrics_enabled=False) as (client, state):
        answer = await client.get("/metrics")
        assert_error(answer, 404, "not_found")  # no such route then; ids stay
        assert not state.metrics.enabled


async def test_metrics_are_closed_in_production_unless_a_token_or_port_opens_them(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with observed(app_env="production") as (client, state):
        assert_error(await client.get("/metrics"), 404, "not_found")
        assert state.metrics.enabled  # still counted, for METRICS_PORT or a token later
    assert any("METRICS_TOKEN or METRICS_PORT" in r.getMessage() for r in caplog.records)
    async with observed(app_env="production", metrics_token=SecretStr("s3cret-metrics")) as (client, _):
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        await scrape(client, "s3cret-metrics")
    async with observed(app_env="production", metrics_port=9464) as (client, _):
        assert_error(await client.get("/metrics"), 404, "not_found")  # served on its own port


async def test_request_metrics_do_not_grow_with_invented_methods(observed: Observed) -> None:
    """h11 takes any token as a method: each must not make a cache entry or a series."""
    async with observed() as (client, state):
        for i in range(300):
            await client.request(f"X{i}", "/health")
        samples = await scrape(client)
        cached = len(state.metrics._http)  # the per-label cache: bounded by what is real
    assert requests(samples, "OTHER", "/health", 405) == 300
    assert not any(dict(labels).get("method", "").startswith("X") for _, labels in samples)
    assert cached <= 3, cached


# --------------------------------------------------------------------------- logs


async def test_the_text_log_escapes_what_a_client_put_in_a_path(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    """A path may hold any byte (percent-decoded): one request is one line, with no
    terminal escapes, whatever it is."""
    forged = "2026-12-07 05:00:00,000 INFO avatar_chat.access [1] - GET /admin 200 0.1 ms"
    caplog.set_level(logging.INFO)
    async with observed() as (client, _):
        for end in ("", "%0d%1b[31mred%1b[0m%E2%80%A8%E2%80%AEevil%00"):
            answer = await client.get("/x%0a" + forged.replace(" ", "%20") + end)
            assert answer.status_code == 404
    access = [r for r in caplog.records if r.name == "avatar_chat.access" and "/x" in r.getMessage()]
    assert len(access) == 2
    formatter = TextFormatter()
    for record in access:
        line = formatter.format(record)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
        assert "\u2028" not in line and "\u202e" not in line
        assert "GET /x\\n2026-12-07 05:00:00,000 INFO" in line
    # The record keeps the value as it was for handlers that escape on their own (JSON).
    assert "\n" in access[-1].__dict__["path"]


def test_text_log_tracebacks_keep_their_lines_but_no_terminal_escapes() -> None:
    try:
        raise ValueError("bad value \x1b[2J\nnext")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed: %s", ("\x1b]0;t\x07",), None)
        record.exc_info = sys.exc_info()
    text = TextFormatter().format(record)
    assert "\x1b" not in text and "\x07" not in text
    assert text.splitlines()[0].endswith("failed: \\x1b]0;t\\x07")
    assert "Traceback (most recent call last):" in text.splitlines()[1]
