"""Metrics and logs of real `avatar-chat serve` processes with several workers.

- /metrics, answered by any worker, is one view of all of them (PROMETHEUS_MULTIPROC_DIR
  files merged), counts exactly the traffic sent, and keeps counting right after a
  worker was killed and replaced (its gauges dropped, its counters kept);
- METRICS_PORT serves that view on a port of its own; METRICS_TOKEN guards both;
- the JSON logs of a full run (sign-in token, avatar, chat turns, provider failures,
  4xx answers) parse line by line, carry the request id of every request, and hold no
  token, key, secret or message text.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.assertions import assert_error
from tests.support.factories import TEST_JWT_SECRET, create_avatar, create_conversation, create_user, send
from tests.support.metrics import metric, metric_samples
from tests.support.servers import ServerProcess, free_port

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TURN = "/conversations/{conversation_id}/messages"
PERSONA = "/avatars/me/persona"
METRICS_TOKEN = "metrics-token-" + "m" * 20


def count(samples: Samples, method: str, route: str, status: int) -> float:
    name = "avatar_chat_http_request_duration_seconds_count"
    return metric(samples, name, method=method, route=route, status=str(status)) or 0.0


async def scrape(url: str, token: str | None = METRICS_TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url, headers=headers)
    assert answer.status_code == 200, answer.text
    return metric_samples(answer.text)


async def scrape_until(url: str, expected: dict[tuple[str, str, int], int], timeout_s: float = 10) -> Samples:
    """A scrape once it shows `expected` request counts: each worker records a request
    right after answering it, so the last ones may land a moment after the client has them."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape(url)
        seen = {key: count(samples, *key) for key in expected}
        if seen == expected or time.monotonic() > deadline:
            assert seen == expected
            return samples
        await asyncio.sleep(0.1)


def requests_of(files: Path, pid: int, method: str, route: str, status: int) -> float:
    """What one worker recorded, from its own value file."""
    merged = MultiProcessCollector.merge(glob.glob(str(files / f"histogram_{pid}.db")))  # type: ignore[no-untyped-call]
    wanted = {"method": method, "route": route, "status": str(status)}
    return sum(
        float(sample.value)
        for family in merged
        for sample in family.samples
        if sample.name.endswith("_count") and sample.labels == wanted
    )


async def persona(client: httpx.AsyncClient, headers: dict[str, str], i: int) -> None:
    answer = await client.patch(
        "/avatars/me/persona", json={"personality": ("witty", "caring")[i % 2]}, headers=headers
    )
    assert answer.status_code == 200, answer.text


async def test_two_workers_report_one_view_also_after_one_is_killed(
    database_url: str, owner: asyncpg.Connection, tmp_path: Path
) -> None:
    files = tmp_path / "prometheus"
    files.mkdir()
    (files / "counter_4000000.db").write_bytes(b"left over from an earlier run")
    async with ServerProcess(
        database_url=database_url,
        workers=2,
        env={"PROMETHEUS_MULTIPROC_DIR": str(files), "METRICS_TOKEN": METRICS_TOKEN},
    ) as server:
        assert not (files / "counter_4000000.db").exists()  # wiped at start
        url = server.base_url + "/metrics"
        user = await create_user(owner)
        pids = server.worker_pids()
        assert len(pids) == 2
        async with server.client() as client:  # a new connection per request: both workers serve
            await create_avatar(client, user)
            patches = 0
            for _ in range(10):
                await persona(client, user.headers, patches)
                patches += 1
            # Until both workers have served some (the kernel picks who accepts).
            while min(requests_of(files, pid, "PATCH", PERSONA, 200) for pid in pids) == 0:
                assert patches < 200
                await persona(client, user.headers, patches)
                patches += 1
            conversation = await create_conversation(client, user, title="metrics")
            for i in range(6):
                assert (await send(client, user, conversation["id"], f"turn {i}")).status_code == 201
            for _ in range(3):
                assert (await client.get("/nothing/here")).status_code == 404
            assert_error(await client.get("/metrics"), 401, "unauthorized")
        expected = {
            ("PATCH", PERSONA, 200): patches,
            ("POST", "/avatars/me", 201): 1,
            ("POST", TURN, 201): 6,
            ("GET", "unmatched", 404): 3,
            ("GET", "/metrics", 401): 1,
        }
        samples = await scrape_until(url, expected)
        # Every scrape, whichever worker answers it, shows the same totals.
        for _ in range(6):
            again = await scrape(url)
            assert {key: count(again, *key) for key in expected} == expected
        assert sum(requests_of(files, pid, "PATCH", PERSONA, 200) for pid in pids) == patches
        assert metric(samples, "avatar_chat_chat_turns_total", outcome="complete") == 6
        lookups = sum(
            metric(samples, "avatar_chat_session_store_lookups_total", kind="avatar", result=r) or 0
            for r in ("hit", "miss", "stale")
        )
        assert lookups == 6
        assert metric(samples, "avatar_chat_workers") == 2
        assert metric(samples, "avatar_chat_db_pool_max_connections") == 20  # 2 workers x 10
        pool = metric(samples, "avatar_chat_db_pool_connections")
        assert pool is not None and 2 <= pool <= 20

        # A worker dies; uvicorn starts another. Gauges count the live ones, totals stay.
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = server.worker_pids()
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, now
            await asyncio.sleep(0.1)
        await server.wait_ready()
        deadline = time.monotonic() + 30
        while True:
            after = await scrape(url)
            if (
                metric(after, "avatar_chat_workers") == 2
                and metric(after, "avatar_chat_db_pool_max_connections") == 20
            ):
                break
            assert time.monotonic() < deadline, metric(after, "avatar_chat_workers")
            await asyncio.sleep(0.2)
        assert not glob.glob(str(files / f"gauge_live*_{victim}.db"))
        assert count(after, "PATCH", PERSONA, 200) == patches  # the dead worker's share is kept
        assert count(after, "POST", TURN, 201) == 6


async def test_metrics_port_serves_all_workers_and_the_api_port_does_not(
    database_url: str, owner: asyncpg.Connection
) -> None:
    port = free_port()
    async with ServerProcess(
        database_url=database_url,
        workers=2,
        env={"METRICS_PORT": str(port), "METRICS_TOKEN": METRICS_TOKEN},
    ) as server:
        user = await create_user(owner)
        async with server.client() as client:
            await create_avatar(client, user)
            for i in range(4):
                await persona(client, user.headers, i)
            assert_error(await client.get("/metrics"), 404, "not_found")
        url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.get(url)
            assert refused.status_code == 401
            assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404
        samples = await scrape_until(url, {("PATCH", PERSONA, 200): 4, ("GET", "unmatched", 404): 1})
        assert metric(samples, "avatar_chat_workers") == 2
    async with httpx.AsyncClient(timeout=2) as http:  # stopped with the server
        with pytest.raises(httpx.TransportError):
            await http.get(f"http://127.0.0.1:{port}/metrics")


async def test_json_logs_of_a_full_run_parse_carry_request_ids_and_hold_no_secret(
    database_url: str, owner: asyncpg.Connection, capfd: pytest.CaptureFixture[str]
) -> None:
    fake = FakeOpenAIServer()
    await fake.start()
    api_key = "sk-test-" + uuid.uuid4().hex
    marker = uuid.uuid4().hex[:12]
    url_token = "url-token-" + uuid.uuid4().hex
    said = {
        "json": f"my diary {marker} json turn",
        "sse": f"my diary {marker} streamed turn",
        "failed": f"[[fake:status_500]] my diary {marker} failed turn",
        "refused": f"[[fake:status_401]] my diary {marker} refused key",
    }
    server = ServerProcess(
        database_url=database_url,
        workers=2,
        env={
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
            "LLM_BASE_URL": fake.base_url,
            "LLM_API_KEY": api_key,
            "LLM_MAX_RETRIES": "0",
            "LLM_TIMEOUT_S": "5",
            "METRICS_TOKEN": METRICS_TOKEN,
        },
    )
    capfd.readouterr()  # from here on: the server's output only
    answered: dict[str, str] = {}  # request id -> what it was
    try:
        await server.start()
        user = await create_user(owner)
        async with server.client() as client:

            def note(what: str, answer: httpx.Response) -> httpx.Response:
                answered[answer.headers["x-request-id"]] = what
                return answer

            note(
                "create avatar", await client.post("/avatars/me", json={"name": "Ava"}, headers=user.headers)
            )
            note("persona", await client.patch(PERSONA, json={"personality": "witty"}, headers=user.headers))
            bad = await client.patch(PERSONA, json={"personality": "grumpy"}, headers=user.headers)
            assert_error(note("bad persona", bad), 422, "validation_failed")
            forged = {"Authorization": "Bearer not-a-jwt"}
            assert_error(
                note("bad token", await client.get("/avatars/me", headers=forged)), 401, "malformed_token"
            )
            conversation = note(
                "conversation", await client.post("/conversations", json={}, headers=user.headers)
            )
            cid = conversation.json()["id"]
            ok = note("json turn", await send(client, user, cid, said["json"]))
            assert ok.status_code == 201, ok.text
            async with client.stream(
                "POST",
                f"/conversations/{cid}/messages",
                json={"content": said["sse"]},
                headers={**user.headers, "Accept": "text/event-stream"},
            ) as stream:
                note("sse turn", stream)
                assert "event: done" in "".join([chunk async for chunk in stream.aiter_text()])
            failed = note("failed turn", await send(client, user, cid, said["failed"]))
            assert_error(failed, 502, "provider_error")
            refused = note("refused key", await send(client, user, cid, said["refused"]))
            assert_error(refused, 502, "provider_auth_failed")
            # Signed URLs carry a token in the query string: the access log leaves queries out.
            signed = await client.get(
                f"/storage/v1/object/sign/avatars/{user.id}/a.webp", params={"token": url_token}
            )
            assert 400 <= note("signed url", signed).status_code < 500
            traced = await client.get("/health", headers={"X-Request-ID": "trace-from-the-client-1"})
            note("traced", traced)
            scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            note("metrics", scraped)
            assert scraped.status_code == 200
            await asyncio.sleep(1.0)  # the title task and the last access lines
    finally:
        if server.proc is not None:
            await server.stop()
        await fake.stop()
    out = capfd.readouterr()
    text = out.out + out.err

    for secret in (user.token, TEST_JWT_SECRET, api_key, METRICS_TOKEN, url_token, marker, *said.values()):
        assert secret not in text, f"logged: {secret[:16]}..."
    records: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message", "request_id"} <= set(record), record
            records.append(record)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines too
    assert any(r["level"] == "DEBUG" for r in records)  # debug logging was on
    # HTTP clients log URLs and headers below WARNING: kept out whatever LOG_LEVEL says.
    chatty = ("httpx", "httpcore", "httpx2", "httpcore2", "openai")
    assert not [r for r in records if r["logger"].split(".")[0] in chatty and r["level"] in ("DEBUG", "INFO")]
    access = [r for r in records if r["logger"] == "avatar_chat.access"]
    assert all(r["request_id"] for r in access)
    by_id = {r["request_id"]: r for r in access}
    missing = {what for rid, what in answered.items() if rid not in by_id}
    assert not missing, missing
    assert by_id["trace-from-the-client-1"]["route"] == "/health"
    assert by_id[failed.headers["x-request-id"]]["status"] == 502
    assert by_id[failed.headers["x-request-id"]]["route"] == TURN
    assert all("?" not in r["path"] for r in access)
    # The 502 is logged as a warning of that very request.
    warnings = [
        r for r in records if r["level"] == "WARNING" and r["request_id"] == failed.headers["x-request-id"]
    ]
    assert any("provider_error" in r["message"] for r in warnings), warnings


async def test_text_logs_of_a_real_server_hold_one_line_per_request_whatever_the_path(
    database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """`avatar-chat serve` logging text at INFO, as by default: a path that percent-encodes a
    newline and a forged record, or terminal escapes, stays on its own one line, escaped."""
    server = ServerProcess(database_url=database_url, workers=1, env={"LOG_LEVEL": "INFO"})
    forged = "2026-12-07%2005:00:00,000%20INFO%20avatar_chat.access%20[1]%20-%20GET%20/admin%20200"
    marker = uuid.uuid4().hex
    try:
        await server.start()
        capfd.readouterr()  # from here on: what the requests make it log
        async with server.client() as client:
            # httpx would refuse these characters in a URL: send the request line as raw bytes.
            for path in (f"/{marker}%0a{forged}", f"/{marker}%1b[31mred%1b[0m%0d%e2%80%a8%00"):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                try:
                    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    writer.write(request.encode())
                    assert (await reader.read()).startswith(b"HTTP/1.1 404")
                finally:
                    writer.close()
                    await writer.wait_closed()
            assert (await client.get("/health")).status_code == 200
    finally:
        await server.stop()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if marker in line]
    assert len(lines) == 2, err
    assert not any(line.startswith("2026-12-07 05:00:00,000") for line in err.splitlines())
    assert "\x1b" not in err and "\x00" not in err and "\u2028" not in err and "\r" not in err
    assert f"/{marker}\\n2026-12-07 05:00:00,000 INFO" in lines[0]
    assert f"/{marker}\\x1b[31mred\\x1b[0m\\r\\u2028\\x00" in lines[1]
