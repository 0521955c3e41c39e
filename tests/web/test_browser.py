"""The web client end to end, in headless Chromium (Debian's `chromium`, driven by
Playwright), against `avatar-chat serve --workers 2` on the embedded default exactly as
`./scripts/run` starts it: sign in, create the avatar, watch a reply stream in, switch the
persona, reload mid-stream, stop and retry, 401, 429, a plan's quota (the usage meter,
429 quota_exceeded) and a database outage (503); data portability (export my data as a zip,
import it into another account once, the avatar as a character card PNG and JSON and made
from one, a stale ETag); safety
(the suitability notice, the AI disclosure, a crisis notice, a withheld reply and a
blocked message, on a server of their own with the disclosure on); and CORS from pages
served on a second origin (listed) and a third (not listed). Screenshots at phone and
desktop width go to test-artifacts/. Select with `-m browser`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import threading
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from PIL import Image
from playwright.async_api import Browser, Page, Request, Response, ViewportSize, async_playwright, expect

from avatar_chat.core.settings import Settings
from avatar_chat.ops.embedded import EmbeddedPostgres
from tests.fakes.gotrue_server import FakeGoTrue, serve_gotrue
from tests.support.factories import TEST_JWT_SECRET, create_user
from tests.support.servers import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# The offline provider's reply (~35 words, 4 a chunk) then streams for about 2.5 s.
CHUNK_DELAY_MS = 250
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 812}
DEV_SESSION = "avatar-chat.dev-session"

expect.set_options(timeout=15_000)


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.fail(
            "Debian's chromium is not installed: run ./scripts/system-deps as root (apt-get install chromium)"
        )
    return found


def _email() -> str:
    return f"web-{uuid.uuid4().hex[:10]}@example.test"


# --- the servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _static_origin() -> Iterator[str]:
    """A tiny page server on a port of its own (another origin than the API's)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>another origin</title><p>another origin</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass(frozen=True)
class Origins:
    listed: str
    unlisted: str


@pytest.fixture(scope="module")
def origins() -> Iterator[Origins]:
    with _static_origin() as listed, _static_origin() as unlisted:
        yield Origins(listed, unlisted)


def _stop_leftover_postgres(data_dir: Path) -> None:
    """serve stops its embedded Postgres on the way out; should it have been killed
    instead, stop the postmaster it left (by the pid in its own pid file)."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def _embedded_server(
    data_dir: Path, *, workers: int, env: dict[str, str]
) -> AsyncIterator[ServerProcess]:
    """`avatar-chat serve` on the embedded default in development (the dev sign-in), with
    its own DATA_DIR; stopped, and its Postgres with it, whatever happened."""
    proc = ServerProcess(
        database_url=None,
        jwt_secret=None,
        workers=workers,
        env={"DATA_DIR": str(data_dir), "APP_ENV": "development", "SHUTDOWN_GRACE_S": "5", **env},
    )
    try:
        await proc.start(timeout_s=120)
        yield proc
    finally:
        try:
            if proc.proc is not None:
                await proc.stop()
        finally:
            await asyncio.to_thread(_stop_leftover_postgres, data_dir)


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory, origins: Origins) -> AsyncIterator[ServerProcess]:
    env = {
        "OFFLINE_LLM_CHUNK_DELAY_MS": str(CHUNK_DELAY_MS),
        "CORS_ALLOW_ORIGINS": origins.listed,
        "MAX_CONCURRENT_STREAMS": "1",  # a second reply at once is a real 429
    }
    async with _embedded_server(tmp_path_factory.mktemp("web-e2e"), workers=2, env=env) as proc:
        yield proc


# The notices as the safety server gives them: the disclosure (off in the other tests'
# servers), and the defaults of the other settings, set explicitly (not inherited).
DISCLOSURE = "You are chatting with an AI, not a person (browser test)."
SUITABILITY = Settings.model_fields["safety_suitability_notice"].default
CRISIS = Settings.model_fields["safety_crisis_notice"].default
FILTERED = Settings.model_fields["moderation_filtered_text"].default


@pytest.fixture(scope="module")
async def safety_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    env = {
        "SAFETY_DISCLOSURE_NOTICE": DISCLOSURE,
        "SAFETY_SUITABILITY_NOTICE": SUITABILITY,
        "SAFETY_CRISIS_NOTICE": CRISIS,
        "SAFETY_CRISIS_MODE": "precede",  # the notice, then the reply
        "MODERATION_FILTERED_TEXT": FILTERED,
        "MODERATION_PROVIDER": "offline",  # its rules: self-harm -> crisis, sexual -> block
        "MODERATION_ACTIONS": "",
        "MODERATION_OUTPUT_MODE": "stream",  # a withheld reply had shown some text
        "OFFLINE_LLM_CHUNK_DELAY_MS": "100",
    }
    async with _embedded_server(tmp_path_factory.mktemp("web-safety"), workers=1, env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@contextlib.asynccontextmanager
async def _page(browser: Browser, viewport: ViewportSize, **options: Any) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=viewport, **options)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        assert errors == [], errors
    finally:
        await context.close()


@pytest.fixture
async def desktop(browser: Browser) -> AsyncIterator[Page]:
    async with _page(browser, DESKTOP) as page:
        yield page


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[Page]:
    async with _page(browser, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True) as page:
        yield page


async def _screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name))


# --- what a user does -------------------------------------------------------------------------------


async def _sign_in(page: Page, server: ServerProcess, email: str) -> None:
    await page.goto(server.base_url + "/app")
    await page.locator("#dev-email").fill(email)
    await page.get_by_role("button", name="Sign in").click()


async def _create_avatar(page: Page, name: str, personality: str) -> None:
    await expect(page.get_by_role("heading", name="Create your avatar")).to_be_visible()
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Personality").select_option(personality)
    await page.get_by_role("button", name="Create avatar").click()
    await expect(page.get_by_label("Persona", exact=True)).to_have_value(personality)
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()


def _replies(page: Page) -> Any:
    return page.locator("#messages > li.assistant")


async def _send(page: Page, text: str) -> Any:
    """Types and sends with the keyboard; the new reply's element, once it shows."""
    count = await _replies(page).count()
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")
    await expect(_replies(page)).to_have_count(count + 1)
    return _replies(page).nth(count)


async def _watch(reply: Any, *, until: tuple[str, ...] = ("complete",), timeout_s: float = 20) -> list[str]:
    """Every distinct text the reply showed, polled every 30 ms, until its status is in `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await reply.locator(".content").inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
        if await reply.get_attribute("data-status") in until:
            # The last text and the status can change together between the two reads.
            if (text := await reply.locator(".content").inner_text()) != seen[-1]:
                seen.append(text)
            return seen
        await asyncio.sleep(0.03)
    raise AssertionError(f"the reply did not reach {until}; it showed {seen}")


async def _token(page: Page) -> str:
    token: str = await page.evaluate(f"JSON.parse(localStorage.getItem('{DEV_SESSION}')).access_token")
    return token


async def _saved_messages(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    async with server.client() as client:
        headers = {"Authorization": f"Bearer {token}"}
        conversations = (await client.get("/conversations", headers=headers)).json()["items"]
        assert len(conversations) == 1, conversations
        page = await client.get(f"/conversations/{conversations[0]['id']}/messages", headers=headers)
        items: list[dict[str, Any]] = page.json()["items"]
        return items


@contextlib.asynccontextmanager
async def _database(server: ServerProcess) -> AsyncIterator[asyncpg.Connection]:
    """A connection, as the database owner, to the cluster `serve` started in its DATA_DIR
    (attached to, and let go of, never stopped)."""
    cluster = EmbeddedPostgres(server.data_dir, stop_on_exit=False)
    dsn = await asyncio.to_thread(cluster.start)
    try:
        connection = await asyncpg.connect(dsn)
        try:
            yield connection
        finally:
            await connection.close()
    finally:
        cluster.release()


# --- the tests --------------------------------------------------------------------------------------


async def test_sign_in_create_avatar_chat_and_switch_persona(server: ServerProcess, desktop: Page) -> None:
    page = desktop
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "friendly")
    # Every control has a label (a <label>, or aria-label).
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter((el) => !el.labels?.length && !el.getAttribute('aria-label'))
            .map((el) => el.id || el.name)"""
    )
    assert unlabelled == []

    reply = await _send(page, "Tell me about your day")
    seen = await _watch(reply)
    final = seen[-1]
    assert final.startswith("Ava (friendly, persona v1, companion mode):"), final
    steps = [text for text in seen[:-1] if text]
    # It streamed in: several growing texts before the whole one, each a prefix of it.
    assert len(set(steps)) >= 3, seen
    assert all(final.startswith(text) for text in steps), seen
    await expect(reply.locator(".persona")).to_have_text("friendly · persona v1")

    await page.get_by_label("Persona", exact=True).select_option("witty")
    await expect(page.locator("#persona-status")).to_contain_text("witty (version 2)")
    await expect(page.locator("#avatar-version")).to_have_text("2")
    second = await _send(page, "And now, who are you?")
    await _watch(second)
    await expect(second.locator(".persona")).to_have_text("witty · persona v2")
    await expect(second.locator(".content")).to_contain_text("Ava (witty, persona v2")
    # The earlier reply still says which persona wrote it.
    await expect(_replies(page).first.locator(".persona")).to_have_text("friendly · persona v1")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    # supabase-js is loaded only when a Supabase project is configured.
    assert not [url for url in fetched if "/vendor/" in url], fetched
    await _screenshot(page, "web-client-desktop.png")


async def test_reload_mid_stream_resumes_the_reply_at_phone_width(server: ServerProcess, phone: Page) -> None:
    page = phone
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if r.url.endswith("/stream") else None)
    # Keyboard only: the email field has the focus, Enter signs in; Tab to the button.
    await page.goto(server.base_url + "/app")
    await expect(page.locator("#dev-email")).to_be_focused()
    await page.keyboard.type(_email())
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Create your avatar")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Name")).to_be_focused()
    await page.keyboard.press("ControlOrMeta+A")
    await page.keyboard.type("Kai")
    for _ in range(3):  # personality (friendly), backstory, then the button
        await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Create avatar")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()

    reply = await _send(
        page, "Tell me a long story, please: about a lighthouse keeper, a storm and a lost cat"
    )
    # Some of it has streamed in, not all: reload now.
    deadline = time.monotonic() + 10
    while len(await reply.locator(".content").inner_text()) < 20:
        assert time.monotonic() < deadline, "no text streamed in"
        await asyncio.sleep(0.03)
    assert await reply.get_attribute("data-status") == "streaming"
    before = await reply.locator(".content").inner_text()
    await page.reload()

    reply = _replies(page).last
    after = await _watch(reply)
    final = after[-1]
    assert final.startswith(before) and len(final) > len(before), (before, after)
    assert final.startswith("Kai (friendly, persona v1, companion mode):")
    assert final.count("You said:") == 1, final  # nothing twice, nothing lost
    # After the reload it resumed from where it was (Last-Event-ID), still streaming.
    resumed = [r for r in streams if r.method == "GET"]
    assert resumed and "last-event-id" in resumed[0].headers, [r.headers for r in resumed]
    assert any(text and text != final for text in after), after
    saved = await _saved_messages(server, await _token(page))
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert saved[1]["content"] == final and saved[1]["status"] == "complete"
    await expect(reply.locator(".persona")).to_have_text("friendly · persona v1")
    await _screenshot(page, "web-client-phone.png")


async def test_stop_a_reply_then_retry_it(server: ServerProcess, desktop: Page) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Sam", "caring")
    reply = await _send(page, "Please say something long")
    await expect(reply.locator(".content")).not_to_be_empty()
    await page.get_by_role("button", name="Stop").click()
    await expect(reply).to_have_attribute("data-status", "stopped")
    await expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    stopped = await reply.locator(".content").inner_text()
    assert stopped and "[offline provider" not in stopped  # cut short

    await reply.get_by_role("button", name="Retry this reply").click()
    # Another reply to the same message replaces the stopped one in the view.
    retried = _replies(page).last
    await expect(retried).to_have_attribute("data-status", "complete", timeout=20_000)
    await expect(_replies(page)).to_have_count(1)
    await expect(retried.locator(".content")).to_contain_text("[offline provider")
    await expect(page.locator("#messages > li.user")).to_have_count(1)


async def test_a_401_takes_the_user_back_to_sign_in(server: ServerProcess, desktop: Page) -> None:
    page = desktop
    email = _email()
    await _sign_in(page, server, email)
    await _create_avatar(page, "Rae", "playful")
    # The stored token goes bad (a revoked or garbled session): the API answers 401.
    await page.evaluate(
        f"""() => {{
            const s = JSON.parse(localStorage.getItem('{DEV_SESSION}'));
            s.access_token = 'not.a.token';
            localStorage.setItem('{DEV_SESSION}', JSON.stringify(s));
        }}"""
    )
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#sign-in-message")).to_contain_text("Please sign in again")
    await page.locator("#dev-email").fill(email)
    await page.get_by_role("button", name="Sign in").click()
    # Back in, as the same user: the avatar is there.
    await expect(page.get_by_label("Persona", exact=True)).to_have_value("playful")


async def test_a_429_waits_retry_after_then_the_retry_goes_through(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Lou", "professional")
    headers = {"Authorization": f"Bearer {await _token(page)}"}
    async with server.client() as client:
        other = (await client.post("/conversations", json={}, headers=headers)).json()
        # Another device of the same user has a reply streaming (the limit here is one).
        async with client.stream(
            "POST",
            f"/conversations/{other['id']}/messages",
            json={"content": "elsewhere"},
            headers={**headers, "Accept": "text/event-stream"},
        ) as elsewhere:
            assert elsewhere.status_code == 201
            box = page.get_by_label("Message", exact=True)
            await box.fill("Are you there?")
            await box.press("Enter")
            notice = page.locator("#notice")
            await expect(notice).to_contain_text("You can try again in")
            await expect(page.get_by_role("button", name="Retry", exact=True)).to_be_disabled()
            await expect(page.get_by_role("button", name="Send")).to_be_disabled()
            await expect(box).to_have_value("Are you there?")  # nothing typed is lost
            await elsewhere.aread()
    await expect(notice).to_contain_text("You can try again now")
    await page.get_by_role("button", name="Retry", exact=True).click()
    reply = _replies(page).last
    await expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    await expect(page.locator("#messages > li.user")).to_have_count(1)
    await expect(notice).to_be_hidden()


def _reset_phrase(resets_at: str, zone: str) -> str:
    """How the page (en-US) says when a daily quota resets to a user in `zone`: "today at
    9:00 AM" or "tomorrow at 9:00 AM"."""
    when = datetime.fromisoformat(resets_at).astimezone(ZoneInfo(zone))
    today = datetime.now(ZoneInfo(zone)).date()
    time_of_day = f"{when.hour % 12 or 12}:{when.minute:02d} {'AM' if when.hour < 12 else 'PM'}"
    day = {today: "today", today + timedelta(days=1): "tomorrow"}[when.date()]
    return f"{day} at {time_of_day}"


async def test_a_plans_quota_the_meter_counts_up_and_the_send_over_it_says_when_it_resets(
    server: ServerProcess, browser: Browser
) -> None:
    """A user on a plan of 2 messages a day, at phone width in Tokyo: the meter shows 0/2,
    1/2, 2/2; the third send is refused (429 quota_exceeded, Retry-After) and told as which
    quota and when it resets in the user's time, with the text kept; a reload still shows 2/2."""
    zone = "Asia/Tokyo"  # the plan's day is UTC's: its midnight is 9 AM here
    phone = {"device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    async with _page(browser, PHONE, **phone, locale="en-US", timezone_id=zone) as page:
        refused: list[Response] = []
        page.on("response", lambda r: refused.append(r) if r.status == 429 else None)
        await _sign_in(page, server, _email())
        await _create_avatar(page, "Quinn", "friendly")
        # The default plan (free) limits nothing: no meter.
        await expect(page.locator("#usage")).to_be_hidden()
        user_id = await page.evaluate(f"JSON.parse(localStorage.getItem('{DEV_SESSION}')).user.id")
        async with _database(server) as owner:
            await owner.execute(
                "insert into public.plans (name, messages_per_day) values ('tiny', 2)"
                " on conflict (name) do nothing"
            )
            await owner.execute(
                "insert into public.user_plans (user_id, plan) values ($1, 'tiny')", uuid.UUID(user_id)
            )
        await page.reload()
        meter = page.get_by_role("meter", name="Messages today")
        await expect(meter).to_have_attribute("aria-valuenow", "0")
        await expect(meter).to_have_text("0 / 2 messages")
        await expect(page.get_by_role("meter")).to_have_count(1)  # only what the plan limits
        await expect(meter).to_have_attribute("aria-valuemax", "2")

        await _watch(await _send(page, "First of two"))
        await expect(meter).to_have_attribute("aria-valuenow", "1")
        await expect(meter).to_have_text("1 / 2 messages")
        await expect(meter).to_have_attribute("data-level", "ok")
        await _watch(await _send(page, "Second of two"))
        await expect(meter).to_have_attribute("aria-valuenow", "2")
        await expect(meter).to_have_text("2 / 2 messages")
        await expect(meter).to_have_attribute("data-level", "full")

        box = page.get_by_label("Message", exact=True)
        await box.fill("And a third?")
        await box.press("Enter")
        notice = page.locator("#notice")
        await expect(notice).to_contain_text("You have used today's 2 messages on the tiny plan.")
        async with server.client() as client:
            usage = await client.get("/me/usage", headers={"Authorization": f"Bearer {await _token(page)}"})
        assert usage.status_code == 200, usage.text
        told = (await page.locator("#notice-text").inner_text()).replace("\u202f", " ")
        phrase = _reset_phrase(usage.json()["day"]["resets_at"], zone)
        expected = f"You have used today's 2 messages on the tiny plan. You can send again {phrase}."
        assert told == expected, told
        await expect(notice).to_have_attribute("role", "alert")
        await expect(notice).to_have_attribute("data-kind", "quota")
        await expect(page.locator("#notice-retry")).to_be_hidden()  # it would be refused until then
        await expect(box).to_have_value("And a third?")  # nothing typed is lost
        await expect(page.get_by_role("button", name="Send")).to_be_enabled()
        await expect(page.locator("#messages > li.user")).to_have_count(2)
        await expect(meter).to_have_text("2 / 2 messages")
        assert [r.url.rsplit("/", 1)[-1] for r in refused] == ["messages"], [r.url for r in refused]
        assert int(refused[0].headers["retry-after"]) > 0, refused[0].headers
        await _screenshot(page, "web-client-quota.png")

        await page.reload()
        await expect(meter).to_have_attribute("aria-valuenow", "2")
        await expect(meter).to_have_text("2 / 2 messages")
        await expect(meter).to_have_attribute("data-level", "full")


async def test_a_database_outage_is_retried_by_itself_and_the_message_is_sent_once(
    server: ServerProcess, desktop: Page
) -> None:
    """503 -> the client says so and retries by itself with backoff (the same
    Idempotency-Key), until the database, stopped for real, is back."""
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Dee", "caring")
    # The cluster `serve` started in its DATA_DIR: attached to, stopped, started again.
    cluster = EmbeddedPostgres(server.data_dir, stop_on_exit=False)
    await asyncio.to_thread(cluster.start)
    notice = page.locator("#notice")
    try:
        await asyncio.to_thread(cluster.stop)
        box = page.get_by_label("Message", exact=True)
        await box.fill("Are you still there?")
        await box.press("Enter")
        await expect(notice).to_contain_text("The database is unavailable")
        await expect(notice).to_contain_text("Trying again in")
        await expect(notice).to_have_attribute("data-kind", "retrying")
    finally:
        await asyncio.to_thread(cluster.resume)
        cluster.release()
    reply = _replies(page).last
    await expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    await expect(notice).to_be_hidden()
    await expect(page.locator("#messages > li.user")).to_have_count(1)
    await expect(reply.locator(".content")).to_contain_text('You said: "Are you still there?"')
    saved = await _saved_messages(server, await _token(page))
    assert [(m["role"], m["status"]) for m in saved] == [("user", "complete"), ("assistant", "complete")]


async def _shown(page: Page) -> list[tuple[str | None, str | None, str | None]]:
    """(role, notice kind, status) of each message shown, in order."""
    rows: list[list[str | None]] = await page.evaluate(
        """() => [...document.querySelectorAll('#messages > li')]
            .map((li) => [li.dataset.role, li.dataset.kind ?? null, li.dataset.status])"""
    )
    return [(role, kind, status) for role, kind, status in rows]


async def test_safety_suitability_disclosure_crisis_withheld_reply_and_blocked_message(
    safety_server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    # Before sign-in: the operator's suitability notice.
    await page.goto(safety_server.base_url + "/app")
    await expect(page.locator("#suitability-sign-in")).to_be_visible()
    await expect(page.locator("#suitability-sign-in")).to_have_text(SUITABILITY)
    await page.locator("#dev-email").fill(_email())
    await page.get_by_role("button", name="Sign in").click()
    await _create_avatar(page, "Noa", "caring")
    # In the chat: the same notice, one line under the composer.
    await expect(page.locator("#suitability-chat")).to_be_visible()
    await expect(page.locator("#suitability-chat")).to_have_text(SUITABILITY)

    # The first send of a new conversation: the AI disclosure comes before it.
    first = await _send(page, "Hello there")
    await _watch(first)
    disclosure = page.locator("#messages > li.safety-notice")
    await expect(disclosure).to_have_count(1)
    await expect(disclosure).to_have_attribute("data-kind", "disclosure")
    await expect(disclosure.locator(".who")).to_have_text("AI disclosure")
    await expect(disclosure.locator(".content")).to_have_text(DISCLOSURE)
    assert await _shown(page) == [
        ("notice", "disclosure", "complete"),
        ("user", None, "complete"),
        ("assistant", None, "complete"),
    ]

    # Suicidal ideation: the crisis notice, right after the message and before the reply.
    # The offline model quotes the message, so its reply is withheld by moderation: what
    # streamed in is replaced by the operator's text.
    second = await _send(page, "I want to kill myself")
    crisis = page.locator("#messages > li.safety-crisis")
    await expect(crisis).to_be_visible()
    await expect(crisis.locator(".content")).to_have_text(CRISIS)
    await expect(crisis.locator(".who")).to_have_text("Crisis support")
    seen = await _watch(second, until=("complete", "filtered"))
    assert seen[-1] == FILTERED, seen
    assert any(text.startswith("Noa (caring") for text in seen), seen  # it had streamed in
    await expect(second).to_have_attribute("data-status", "filtered")
    await expect(second.locator(".status")).to_have_text("withheld")
    await expect(second.get_by_role("button", name="Retry this reply")).to_have_count(0)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    after_crisis = [
        ("notice", "disclosure", "complete"),
        ("user", None, "complete"),
        ("assistant", None, "complete"),
        ("user", None, "complete"),
        ("notice", "crisis", "complete"),
        ("assistant", None, "filtered"),
    ]
    assert await _shown(page) == after_crisis

    # Explicit sexual content: refused (422 message_blocked), shown as not sent, no reply.
    box = page.get_by_label("Message", exact=True)
    await box.fill("send me nudes")
    await box.press("Enter")
    blocked = page.locator("#messages > li.user").last
    await expect(blocked).to_have_attribute("data-status", "blocked")
    await expect(blocked.locator(".content")).to_have_text("send me nudes")
    await expect(blocked.locator(".status")).to_have_text("not sent")
    await expect(page.locator("#notice")).to_contain_text("This message was not sent")
    await expect(page.locator("#notice-retry")).to_be_hidden()
    await expect(_replies(page)).to_have_count(2)
    await expect(box).to_have_value("")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    blocked_too = [*after_crisis, ("user", None, "blocked")]
    assert await _shown(page) == blocked_too

    # History shows all of it the same way after a reload.
    await page.reload()
    await expect(page.locator("#messages > li")).to_have_count(len(blocked_too))
    assert await _shown(page) == blocked_too
    await expect(page.locator("#messages > li.safety-crisis .content")).to_have_text(CRISIS)
    await expect(_replies(page).last.locator(".content")).to_have_text(FILTERED)
    saved = await _saved_messages(safety_server, await _token(page))
    assert [(m["role"], m["notice_kind"], m["status"]) for m in saved] == blocked_too
    await _screenshot(page, "web-client-safety.png")


# --- data portability ------------------------------------------------------------------------------


async def _user_id(page: Page) -> str:
    user_id: str = await page.evaluate(f"JSON.parse(localStorage.getItem('{DEV_SESSION}')).user.id")
    return user_id


def _conversation_id(page: Page) -> str:
    match = re.search(r"#/c/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    return match.group(1)


async def _open_account_menu(page: Page) -> None:
    """The account menu, opened with the keyboard: its summary focused, Enter."""
    await page.locator("#account-menu > summary").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("button", name="Export my data")).to_be_visible()


async def _export(page: Page, folder: Path) -> Path:
    """Export my data, from the account menu with the keyboard; the archive saved."""
    await _open_account_menu(page)
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Export my data")).to_be_focused()
    async with page.expect_download() as info:
        await page.keyboard.press("Enter")
    download = await info.value
    path = folder / download.suggested_filename
    await download.save_as(path)
    return path


async def test_export_my_data_downloads_the_archive_and_says_when_to_retry(
    server: ServerProcess, desktop: Page, tmp_path: Path
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ivy", "witty")
    await _watch(await _send(page, "Remember this for the archive"))
    conversation_id = _conversation_id(page)
    user_id = await _user_id(page)

    # Another export of this user's is under way (its lease, as a worker of any server
    # would hold it): refused, told when to try again, Retry offered.
    async with _database(server) as owner:
        await owner.execute(
            "insert into avatar_chat.exports (user_id, expires_at, day)"
            " values ($1, now() + interval '90 seconds', (now() at time zone 'UTC')::date)",
            uuid.UUID(user_id),
        )
    await _open_account_menu(page)
    await page.get_by_role("button", name="Export my data").click()
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("An export of your data is already being made")
    await expect(notice).to_contain_text("Try again once it is done (at the latest in 2 minutes).")
    await expect(notice).to_have_attribute("role", "alert")
    await expect(page.locator("#account-menu")).not_to_have_attribute("open", "")  # closed after the choice
    async with _database(server) as owner:
        await owner.execute("delete from avatar_chat.exports where user_id = $1", uuid.UUID(user_id))

    # Retry: the archive, fetched with the bearer token and saved as the API names it.
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Retry", exact=True).click()
    download = await info.value
    name = download.suggested_filename
    assert re.fullmatch(r"avatar-chat-export-\d{8}-\d{6}\.zip", name), name
    await expect(notice).to_have_text(re.compile(f"Your data was saved as {re.escape(name)}\\."))
    await expect(notice).to_have_attribute("data-kind", "info")

    # Again, with the keyboard only.
    path = await _export(page, tmp_path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("export.json"))
        conversation = json.loads(archive.read(f"conversations/{conversation_id}.json"))
    assert manifest["user"]["id"] == user_id, manifest
    assert manifest["counts"]["conversations"] == 1, manifest
    assert f"conversations/{conversation_id}.json" in names, names
    assert "avatar.json" in names, names
    assert conversation["id"] == conversation_id, conversation
    # The object URL was let go of (not kept for the page's life); nothing left in the DOM.
    await expect(page.locator("a[download]")).to_have_count(0)


async def _import(page: Page, archive: Path, *, replace_avatar: bool = False) -> Any:
    """Import data…, from the account menu: the archive chosen, Import pressed; the dialog."""
    await _open_account_menu(page)
    await page.get_by_role("button", name="Import data…").click()
    return await _import_in_dialog(page, archive, replace_avatar=replace_avatar)


async def _import_in_dialog(page: Page, archive: Path, *, replace_avatar: bool = False) -> Any:
    dialog = page.get_by_role("dialog", name="Import data")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Archive (.zip)")).to_be_focused()
    await dialog.get_by_label("Archive (.zip)").set_input_files(archive)
    await dialog.get_by_label("Replace my avatar with the archive's").set_checked(replace_avatar)
    await dialog.get_by_role("button", name="Import", exact=True).click()
    return dialog


async def test_import_an_export_into_another_account_once(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    # What is imported: one user's two conversations (three turns), exported.
    async with _page(browser, DESKTOP) as page:
        await _sign_in(page, server, _email())
        await _create_avatar(page, "Nell", "playful")
        await _watch(await _send(page, "The first conversation"))
        await _watch(await _send(page, "Still the first one"))
        await page.get_by_role("button", name="New conversation").click()
        await expect(page.locator("#conversation-list > li")).to_have_count(2)
        await expect(page.locator("#messages > li")).to_have_count(0)
        await _watch(await _send(page, "The second conversation"))
        archive = await _export(page, tmp_path)
    with zipfile.ZipFile(archive) as opened:
        counts = json.loads(opened.read("export.json"))["counts"]
    assert (counts["conversations"], counts["messages"]) == (2, 6), counts

    # Another user, with an avatar of their own and no conversations: imported, theirs kept.
    async with _page(browser, DESKTOP) as page:
        await _sign_in(page, server, _email())
        await _create_avatar(page, "Bo", "caring")
        conversations = page.locator("#conversation-list > li")
        await expect(conversations).to_have_count(0)
        dialog = await _import(page, archive)
        message = dialog.locator("#import-message")
        await expect(message).to_have_text("Imported 2 conversations, 6 messages; your own avatar was kept.")
        await expect(message).to_have_attribute("role", "status")
        await _screenshot(page, "web-client-import.png")
        await dialog.get_by_role("button", name="Close").click()
        await expect(dialog).to_be_hidden()
        await expect(page.locator("#account-menu > summary")).to_be_focused()  # back where it was opened
        await expect(conversations).to_have_count(2)  # the list read again
        await expect(page.locator("#avatar-name-heading")).to_have_text("Bo")
        await conversations.last.get_by_role("button").click()
        await expect(page.locator("#messages > li.user")).to_have_count(2)
        await expect(page.locator("#messages > li.user").first).to_contain_text("The first conversation")

        # The same archive again (replace asked for this time): nothing changes.
        dialog = await _import(page, archive, replace_avatar=True)
        await expect(message).to_have_text("This archive was already imported; nothing changed.")
        await dialog.get_by_role("button", name="Close").click()
        await expect(conversations).to_have_count(2)
        await expect(page.locator("#avatar-name-heading")).to_have_text("Bo")

        # A file that is no archive: the API's reason, as an alert.
        not_a_zip = tmp_path / "not-an-archive.zip"
        not_a_zip.write_bytes(b"hello, I am not a zip")
        dialog = await _import(page, not_a_zip)
        await expect(message).to_have_text("This archive cannot be imported. This is not a zip archive.")
        await expect(message).to_have_attribute("role", "alert")
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()

    # A new user with no avatar yet, at phone width: imported from the screen that creates
    # one, the archive's avatar comes too, and the chat opens.
    phone = {"device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    async with _page(browser, PHONE, **phone) as page:
        await _sign_in(page, server, _email())
        await expect(page.get_by_role("heading", name="Create your avatar")).to_be_visible()
        await page.get_by_role("button", name="Import an archive…").click()
        dialog = await _import_in_dialog(page, archive)
        await expect(dialog.locator("#import-message")).to_have_text(
            "Imported 2 conversations, 6 messages and the archive's avatar."
        )
        await dialog.get_by_role("button", name="Close").click()
        await expect(page.locator("#avatar-name-heading")).to_have_text("Nell")
        await expect(page.get_by_label("Persona", exact=True)).to_have_value("playful")
        await page.locator("#conversations-panel > summary").click()
        await expect(page.locator("#conversation-list > li")).to_have_count(2)


async def _card_menu(page: Page) -> None:
    menu = page.locator("#card-menu")
    if await menu.get_attribute("open") is None:
        await menu.locator("summary").click()
    await expect(page.get_by_role("button", name="Export as character card")).to_be_visible()


async def _send_card(page: Page, card: Path, *, submit: str) -> None:
    """The card dialog (open): choose the file, press the submit button (its name says
    whether it creates or replaces)."""
    dialog = page.get_by_role("dialog", name="Create from character card")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Character card (.png or .json)").set_input_files(card)
    await dialog.get_by_role("button", name=submit, exact=True).click()


async def test_the_avatar_as_a_character_card_exported_and_made_from_one(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    # One user exports their avatar as a card (a PNG with the card in `chara`, and JSON).
    async with _page(browser, DESKTOP) as page:
        await _sign_in(page, server, _email())
        await _create_avatar(page, "Ava", "witty")
        await _card_menu(page)
        async with page.expect_download() as info:
            await page.get_by_role("button", name="Export as character card").click()
        download = await info.value
        assert download.suggested_filename == "Ava.png", download.suggested_filename
        png = tmp_path / "Ava.png"
        await download.save_as(png)
        await expect(page.locator("#persona-status")).to_have_text("The character card was saved as Ava.png.")
        async with page.expect_download() as info:
            await page.get_by_role("button", name="Export as JSON").click()
        download = await info.value
        assert download.suggested_filename == "Ava.json", download.suggested_filename
        await download.save_as(tmp_path / "Ava.json")
    with Image.open(png) as image:
        assert image.format == "PNG"
        texts: dict[str, str] = image.text  # type: ignore[attr-defined]
    card = json.loads(base64.b64decode(texts["chara"]))
    assert (card["spec"], card["spec_version"]) == ("chara_card_v2", "2.0"), card
    assert card["data"]["name"] == "Ava", card
    assert json.loads((tmp_path / "Ava.json").read_text())["data"]["name"] == "Ava"

    # Another, at phone width with none yet, makes theirs from that PNG.
    phone = {"device_scale_factor": 2, "is_mobile": True, "has_touch": True}
    async with _page(browser, PHONE, **phone) as page:
        await _sign_in(page, server, _email())
        await expect(page.get_by_role("heading", name="Create your avatar")).to_be_visible()
        await page.get_by_role("button", name="Create from character card…").click()
        await expect(page.locator("#card-replace-warning")).to_be_hidden()
        await _send_card(page, png, submit="Create avatar")
        await expect(page.locator("#avatar-name-heading")).to_have_text("Ava")
        await expect(page.get_by_label("Persona", exact=True)).to_have_value("witty")
        await expect(page.get_by_role("dialog")).to_have_count(0)
        await expect(page.get_by_label("Message", exact=True)).to_be_focused()

        # Then replaces it with a JSON card, confirming: the dialog says what it replaces.
        mira = tmp_path / "Mira.json"
        mira.write_text(
            json.dumps(
                {
                    "spec": "chara_card_v2",
                    "spec_version": "2.0",
                    "data": {
                        "name": "Mira",
                        "description": "A lighthouse keeper who talks to the gulls.",
                        "personality": "gentle, caring and patient",
                        "scenario": "",
                        "first_mes": "Hello, traveller.",
                        "mes_example": "",
                    },
                }
            )
        )
        await _card_menu(page)
        await page.get_by_role("button", name="Create from character card…").click()
        await expect(page.locator("#card-replace-warning")).to_contain_text("This replaces Ava")
        # Meanwhile, the persona is switched on another device: this page's ETag is stale.
        async with server.client() as client:
            switched = await client.patch(
                "/avatars/me/persona",
                json={"personality": "playful"},
                headers={"Authorization": f"Bearer {await _token(page)}", "If-Match": '"1"'},
            )
        assert switched.status_code == 200, switched.text
        await _send_card(page, mira, submit="Replace my avatar")
        message = page.locator("#card-message")
        await expect(message).to_contain_text("Your avatar was changed elsewhere")
        await expect(message).to_have_attribute("role", "alert")
        await expect(page.locator("#avatar-version")).to_have_text("2")  # as it is now
        await _send_card(page, mira, submit="Replace my avatar")
        await expect(page.locator("#avatar-name-heading")).to_have_text("Mira")
        await expect(page.get_by_label("Persona", exact=True)).to_have_value("caring")
        await expect(page.locator("#avatar-version")).to_have_text("3")
        await expect(page.locator("#persona-status")).to_have_text("Now Mira, from the card (version 3).")

        # A file that is no card: the API's own message, the avatar as it was.
        junk = tmp_path / "junk.json"
        junk.write_text('{"hello": "world"}')
        await page.get_by_role("button", name="Create from character card…").click()
        await _send_card(page, junk, submit="Replace my avatar")
        await expect(message).to_contain_text("This character card cannot be used: ")
        await page.get_by_role("button", name="Cancel").click()
        await expect(page.get_by_role("dialog")).to_have_count(0)
        await expect(page.locator("#avatar-name-heading")).to_have_text("Mira")


_CROSS_ORIGIN_CALLS = """
async ({ api, token }) => {
  const auth = { Authorization: `Bearer ${token}` };
  const json = { ...auth, "Content-Type": "application/json" };
  const out = {};
  let r = await fetch(`${api}/avatars/me`, {
    method: "POST", headers: json, body: JSON.stringify({ name: "Cory", personality: "caring" }),
  });
  out.created = [r.status, r.headers.get("ETag")];
  r = await fetch(`${api}/avatars/me/persona`, {
    method: "PATCH", headers: { ...json, "If-Match": out.created[1] },
    body: JSON.stringify({ personality: "witty" }),
  });
  out.switched = [r.status, r.headers.get("ETag")];
  r = await fetch(`${api}/avatars/me/persona`, {
    method: "PATCH", headers: { ...json, "If-Match": '"1"' }, body: JSON.stringify({ personality: "caring" }),
  });
  out.stale = [r.status, (await r.json()).error.code];
  r = await fetch(`${api}/avatars/me`, { headers: { Authorization: "Bearer nope" } });
  out.unauthorized = [r.status, (await r.json()).error.code];
  r = await fetch(`${api}/conversations`, { method: "POST", headers: json, body: "{}" });
  const conversation = await r.json();
  const send = {
    method: "POST",
    headers: {
      ...json, Accept: "text/event-stream", "Idempotency-Key": "cross-1", "X-Request-ID": "cross-origin-test",
    },
    body: JSON.stringify({ content: "Hello from another origin" }),
  };
  r = await fetch(`${api}/conversations/${conversation.id}/messages`, send);
  out.sse = [r.status, r.headers.get("Content-Type")];
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = "", reads = 0;
  for (;;) { const { value, done } = await reader.read(); if (done) break; text += value; reads++; }
  out.reads = reads;
  const names = [...text.matchAll(/^event: (\\w+)$/gm)].map((m) => m[1]);
  out.events = names.filter((e, i) => names.indexOf(e) === i);
  const reply = JSON.parse(text.match(/event: done\\ndata: (.*)/)[1]);
  out.persona = [reply.personality, reply.persona_version];
  r = await fetch(`${api}/conversations/${conversation.id}/messages`, send);
  out.replayed = r.headers.get("Idempotent-Replayed");
  await r.text();
  r = await fetch(`${api}/conversations/${conversation.id}/messages/${reply.id}/stream`, {
    headers: { ...auth, "Last-Event-ID": "1:0" },
  });
  out.resumed = [r.status, (await r.text()).includes("event: done")];
  return out;
}
"""

_CALLS_THAT_MUST_FAIL = """
async ({ api, token }) => {
  const attempts = {
    health: [`${api}/health`, {}],
    avatar: [`${api}/avatars/me`, { headers: { Authorization: `Bearer ${token}` } }],
    create: [`${api}/avatars/me`, {
      method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ name: "Mallory" }),
    }],
  };
  const out = {};
  for (const [name, [url, init]] of Object.entries(attempts)) {
    try {
      const r = await fetch(url, init);
      out[name] = `answered ${r.status}`;
    } catch (err) {
      out[name] = err.name;
    }
  }
  return out;
}
"""


async def test_cors_a_page_on_a_listed_origin_uses_the_api_and_others_cannot(
    server: ServerProcess, browser: Browser, origins: Origins
) -> None:
    async with server.client() as client:
        listed_user = (await client.post("/app/dev/sign-in", json={"email": _email()})).json()
        other_user = (await client.post("/app/dev/sign-in", json={"email": _email()})).json()

        async with _page(browser, DESKTOP) as page:
            await page.goto(origins.listed + "/")
            out = await page.evaluate(
                _CROSS_ORIGIN_CALLS, {"api": server.base_url, "token": listed_user["access_token"]}
            )
        assert out["created"] == [201, '"1"'], out
        assert out["switched"] == [200, '"2"'], out
        assert out["stale"] == [412, "precondition_failed"], out
        assert out["unauthorized"] == [401, "malformed_token"], out
        assert out["sse"] == [201, "text/event-stream; charset=utf-8"], out
        assert out["events"] == ["user_message", "assistant_message", "delta", "done"], out
        assert out["reads"] >= 3, out  # streamed in steps, not buffered whole
        assert out["persona"] == ["witty", 2], out
        assert out["replayed"] == "true", out
        assert out["resumed"] == [200, True], out

        async with _page(browser, DESKTOP) as page:
            await page.goto(origins.unlisted + "/")
            refused = await page.evaluate(
                _CALLS_THAT_MUST_FAIL, {"api": server.base_url, "token": other_user["access_token"]}
            )
        assert refused == {"health": "TypeError", "avatar": "TypeError", "create": "TypeError"}, refused
        # The refused preflight kept the POST from ever being sent.
        mine = await client.get(
            "/avatars/me", headers={"Authorization": f"Bearer {other_user['access_token']}"}
        )
        assert mine.status_code == 404, mine.text
        assert json.loads(mine.text)["error"]["code"] == "avatar_not_found"


@pytest.fixture(scope="module")
def gotrue() -> Iterator[FakeGoTrue]:
    with serve_gotrue(TEST_JWT_SECRET) as fake:
        yield fake


@pytest.fixture(scope="module")
async def supabase_server(database_url: str, gotrue: FakeGoTrue) -> AsyncIterator[ServerProcess]:
    """The API as deployed on a Supabase project: DATABASE_URL, SUPABASE_URL (Auth there,
    faked) and the anon key; so no dev sign-in, and the client signs in with supabase-js."""
    env = {
        "SUPABASE_URL": gotrue.url,
        "SUPABASE_ANON_KEY": "sb_publishable_test-anon-key",
        "APP_ENV": "development",
        "SHUTDOWN_GRACE_S": "5",
    }
    async with ServerProcess(database_url=database_url, env=env) as proc:
        yield proc


async def test_with_a_supabase_project_the_client_signs_in_with_supabase_auth(
    supabase_server: ServerProcess, gotrue: FakeGoTrue, owner: asyncpg.Connection, desktop: Page
) -> None:
    page = desktop
    user = await create_user(owner)
    gotrue.users[user.email] = ("correct horse", user.id)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    await page.goto(supabase_server.base_url + "/app")
    await expect(page.locator("#supabase-sign-in")).to_be_visible()
    await expect(page.locator("#dev-sign-in")).to_be_hidden()
    assert [url for url in fetched if "/vendor/supabase-js@" in url], fetched
    # The dev sign-in does not exist here.
    async with supabase_server.client() as client:
        assert (await client.post("/app/dev/sign-in", json={"email": user.email})).status_code == 404

    await page.get_by_role("textbox", name="Email").fill(user.email)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.locator("#notice")).to_contain_text("Signing in failed: Invalid login credentials")
    await page.get_by_label("Password").fill("correct horse")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await _create_avatar(page, "Zoe", "witty")
    await expect(page.locator("#account-email")).to_have_text(user.email)
    reply = await _send(page, "Hi from a Supabase session")
    await _watch(reply)
    await expect(reply.locator(".persona")).to_have_text("witty · persona v1")
    assert "POST /auth/v1/token?grant_type=password" in gotrue.requests

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#supabase-sign-in")).to_be_visible()
    stored = await page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('sb-'))")
    assert stored == [], stored
