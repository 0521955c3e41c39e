"""The messages area of the web client end to end (issue #22), in headless Chromium against
`avatar-chat serve --workers 2` on the embedded default, as tests/web/test_browser.py runs
it (its fixtures and helpers are imported from there): regenerate a reply twice, go back to
the first with < > and find it still shown after a reload; edit the latest message (the
new reply streams in; an edit moderation refuses shows the API's words and keeps the
text); delete messages after a confirmation, and the 409 `reply_in_progress` of a delete
while the reply streams; the persona label telling the persona history its version; the
avatar's image beside its replies. Select with `-m browser`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, Request, expect

from tests.support.servers import ServerProcess
from tests.web.test_browser import (
    CHUNK_DELAY_MS,
    _create_avatar,
    _email,
    _embedded_server,
    _replies,
    _saved_messages,
    _screenshot,
    _send,
    _sign_in,
    _token,
    _watch,
    browser,
    desktop,
    phone,
)

__all__ = ["browser", "desktop", "phone"]  # the fixtures, used by name

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BLOCKED_WORDS = "This message was not sent: it goes against the content guidelines."


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    env = {
        # A reply streams for about 2.5 s: long enough to act on it while it streams.
        "OFFLINE_LLM_CHUNK_DELAY_MS": str(CHUNK_DELAY_MS),
        # The offline moderation's rules (sexual -> block), for an edit it refuses.
        "MODERATION_PROVIDER": "offline",
        "MODERATION_ACTIONS": "",
    }
    async with _embedded_server(tmp_path_factory.mktemp("web-messages"), workers=2, env=env) as proc:
        yield proc


def _users(page: Page) -> Any:
    return page.locator("#messages > li.user")


async def _persona(page: Page, personality: str, version: int) -> None:
    await page.get_by_label("Persona", exact=True).select_option(personality)
    await expect(page.locator("#avatar-version")).to_have_text(str(version))


async def _regenerate(page: Page) -> Any:
    """Regenerate on the latest reply; the new reply, once it is complete."""
    reply = _replies(page).last
    old_id = await reply.get_attribute("data-id")
    await reply.get_by_role("button", name="Regenerate this reply").click()
    await expect(_replies(page).last).not_to_have_attribute("data-id", old_id or "")
    fresh = _replies(page).last
    await _watch(fresh)
    return fresh


async def test_regenerate_twice_then_back_to_the_first_and_it_stays_after_a_reload(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "friendly")
    first = await _send(page, "Tell me about your day")
    await _watch(first)
    await expect(first.get_by_role("button", name="Regenerate this reply")).to_be_visible()
    # One reply: no < >, and nothing asked about alternatives.
    await expect(first.locator(".variants")).to_have_count(0)

    # Each regenerate with another persona, so that the three replies tell themselves apart.
    await _persona(page, "witty", 2)
    second = await _regenerate(page)
    await expect(second.locator(".content")).to_contain_text("Ava (witty, persona v2")
    await expect(second.get_by_role("group", name="Alternative replies: Reply 2 of 2")).to_be_visible()
    await _persona(page, "caring", 3)
    third = await _regenerate(page)
    await expect(third.locator(".content")).to_contain_text("Ava (caring, persona v3")
    nav = third.get_by_role("group", name="Alternative replies: Reply 3 of 3")
    await expect(nav).to_be_visible()
    await expect(nav.locator(".variant-position")).to_have_text("3/3")
    await expect(nav.get_by_role("button", name="Next reply")).to_be_disabled()
    await expect(_replies(page)).to_have_count(1)  # one reply shown, its alternatives behind < >
    await expect(_users(page)).to_have_count(1)

    # Back to the first with the keyboard: the focus stays on "Previous reply" as the reply changes.
    await nav.get_by_role("button", name="Previous reply").focus()
    await page.keyboard.press("Enter")
    shown = _replies(page).last
    await expect(shown.locator(".content")).to_contain_text("Ava (witty, persona v2")
    await expect(shown.get_by_role("button", name="Previous reply")).to_be_focused()
    await page.keyboard.press("Enter")
    shown = _replies(page).last
    await expect(shown.locator(".content")).to_contain_text("Ava (friendly, persona v1")
    await expect(shown.get_by_role("group", name="Alternative replies: Reply 1 of 3")).to_be_visible()
    await expect(shown.get_by_role("button", name="Previous reply")).to_be_disabled()
    await expect(shown.get_by_role("button", name="Next reply")).to_be_focused()
    await expect(shown.locator(".persona")).to_have_text("friendly · persona v1")
    await _screenshot(page, "web-client-messages-desktop.png")
    chosen = [r for r in requests if r.method == "PUT" and r.url.endswith("/current")]
    assert len(chosen) == 2, [r.url for r in chosen]

    # The history shows the first one as current, after a reload too.
    saved = await _saved_messages(server, await _token(page))
    assert [(m["role"], m["variant"]) for m in saved] == [("user", 0), ("assistant", 0)]
    assert saved[1]["personality"] == "friendly"
    requests.clear()
    await page.reload()
    shown = _replies(page).last
    await expect(shown.locator(".content")).to_contain_text("Ava (friendly, persona v1")
    await expect(shown.get_by_role("group", name="Alternative replies: Reply 1 of 3")).to_be_visible()
    # Alternatives were asked about once, for the one reply whose exchange has some.
    variants = [r.url for r in requests if r.url.endswith("/variants")]
    assert len(variants) == 1, variants
    # Nothing from another origin.
    others = [r.url for r in requests if not r.url.startswith((server.base_url, "data:"))]
    assert others == [], others


async def test_edit_the_latest_message_its_new_reply_streams_and_a_refused_edit_keeps_the_text(
    server: ServerProcess, phone: Page
) -> None:
    page = phone  # 375 px wide
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Kai", "friendly")
    first = await _send(page, "Tell me about cats")
    await _watch(first)
    await _send(page, "And about parrots")
    await _watch(_replies(page).last)
    # Only the latest message offers Edit.
    await expect(_users(page).first.get_by_role("button", name="Edit your message")).to_have_count(0)
    latest = _users(page).last
    await latest.get_by_role("button", name="Edit your message").click()
    box = latest.get_by_role("textbox", name="Edit your message")
    await expect(box).to_be_focused()
    await expect(box).to_have_value("And about parrots")
    # At phone width the form fits the screen.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, width
    await box.fill("And about dogs, please")
    old_id = await _replies(page).last.get_attribute("data-id")
    await box.press("Enter")

    await expect(_replies(page).last).not_to_have_attribute("data-id", old_id or "")
    reply = _replies(page).last
    seen = await _watch(reply)
    final = seen[-1]
    assert 'You said: "And about dogs, please"' in final, final
    assert len({text for text in seen[:-1] if text}) >= 3, seen  # it streamed in
    await expect(latest.locator(".content")).to_have_text("And about dogs, please")
    await expect(latest.get_by_role("textbox")).to_have_count(0)
    # The reply to the old text stays as an alternative.
    await expect(reply.get_by_role("group", name="Alternative replies: Reply 2 of 2")).to_be_visible()
    await expect(_replies(page)).to_have_count(2)
    await _screenshot(page, "web-client-messages-phone.png")

    # An edit moderation refuses: the API's words, the message as it was, the text kept.
    await latest.get_by_role("button", name="Edit your message").click()
    box = latest.get_by_role("textbox", name="Edit your message")
    await box.fill("send me nudes")
    await latest.get_by_role("button", name="Save and resend").click()
    await expect(page.locator("#notice")).to_contain_text(BLOCKED_WORDS)
    await expect(box).to_have_value("send me nudes")
    await expect(box).to_be_editable()
    await box.press("Escape")
    await expect(latest.locator(".content")).to_have_text("And about dogs, please")
    await expect(latest.get_by_role("button", name="Edit your message")).to_be_focused()
    saved = await _saved_messages(server, await _token(page))
    assert [m["content"] for m in saved if m["role"] == "user"] == [
        "Tell me about cats",
        "And about dogs, please",
    ]


async def _confirm_delete(page: Page, button: Any) -> None:
    await button.click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    await dialog.get_by_role("button", name="Delete", exact=True).click()
    await expect(dialog).to_be_hidden()


async def test_delete_messages_and_a_delete_while_the_reply_streams_says_to_stop_it_first(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Sam", "caring")
    await _watch(await _send(page, "First message"))
    streaming = await _send(page, "Second message, with a long reply please")
    await expect(streaming).to_have_attribute("data-status", "streaming")

    # Deleting the message whose reply is being written: 409 reply_in_progress, explained.
    await _confirm_delete(page, _users(page).last.get_by_role("button", name="Delete your message"))
    await expect(page.locator("#notice")).to_contain_text("Stop the reply first")
    await expect(_users(page)).to_have_count(2)
    await _watch(streaming)

    # Cancelled: nothing happens.
    await _users(page).first.get_by_role("button", name="Delete your message").click()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_be_hidden()
    await expect(_users(page)).to_have_count(2)

    # A message of the user's goes with its reply.
    await _confirm_delete(page, _users(page).first.get_by_role("button", name="Delete your message"))
    await expect(_users(page)).to_have_count(1)
    await expect(_replies(page)).to_have_count(1)
    await expect(_users(page).first.locator(".content")).to_have_text(
        "Second message, with a long reply please"
    )
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    # A reply goes alone.
    await _confirm_delete(page, _replies(page).last.get_by_role("button", name="Delete this reply"))
    await expect(_replies(page)).to_have_count(0)
    await expect(_users(page)).to_have_count(1)
    saved = await _saved_messages(server, await _token(page))
    assert [(m["role"], m["content"]) for m in saved] == [
        ("user", "Second message, with a long reply please")
    ]
    await page.reload()
    await expect(_users(page)).to_have_count(1)
    await expect(_replies(page)).to_have_count(0)


async def test_the_persona_label_tells_the_history_its_version_and_the_avatars_image_shows(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Rae", "playful")
    await _persona(page, "witty", 2)
    reply = await _send(page, "Hello")
    await _watch(reply)
    await page.evaluate(
        """() => {
            window.personaVersions = [];
            document.addEventListener('persona-version', (e) => window.personaVersions.push(e.detail));
        }"""
    )
    label = reply.get_by_role("button", name="witty · persona v2")
    await expect(label).to_have_text("witty · persona v2")
    await label.click()
    assert await page.evaluate("window.personaVersions") == [{"version": 2}]
    # The history opens at that version once it has read the avatar again (which sets the
    # panel's image from the avatar's image_path: none here); only then is the image
    # below set, or that read could come after it and take it away.
    history = page.get_by_role("dialog", name="Persona history")
    await expect(history.get_by_role("listitem", name="Version 2 · current")).to_be_focused()
    await history.get_by_role("button", name="Close").click()
    await expect(history).to_be_hidden()

    # The avatar's image beside its replies, from state.avatarImage as the avatar panel
    # keeps it and tells it (set here the way the panel does: the same module instance).
    pixel = "data:image/gif;base64,R0lGODlhAQABAAAAACw="
    set_image = """async ([url, ttl]) => {
        const app = document.querySelector('script[type=module]').src;
        const { state } = await import(new URL('state.js', app).href);
        state.avatarImage = url ? { url128: url, url512: url, expiresAt: Date.now() + ttl } : null;
        document.dispatchEvent(new CustomEvent('avatar-image', { detail: state.avatarImage }));
    }"""
    await page.evaluate(set_image, [pixel, 60_000])
    thumb = reply.locator("img.avatar-thumb")
    await expect(thumb).to_have_attribute("src", pixel)
    await expect(thumb).to_have_attribute("alt", "")
    await expect(_users(page).locator("img")).to_have_count(0)
    # A URL that has expired is never shown.
    await page.evaluate(set_image, [pixel, -1_000])
    await expect(thumb).to_have_count(0)
    await page.evaluate(set_image, [None, 0])
    await expect(thumb).to_have_count(0)


async def test_the_tools_are_reachable_with_the_keyboard_with_visible_focus(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Lou", "friendly")
    reply = await _send(page, "Hi")
    await _watch(reply)
    # Tab from the message box backwards reaches the reply's and the message's tools.
    names: list[str] = []
    await page.get_by_label("Message", exact=True).focus()
    deadline = time.monotonic() + 10
    while "Edit your message" not in names:
        assert time.monotonic() < deadline, names
        await page.keyboard.press("Shift+Tab")
        names.append(
            await page.evaluate(
                "document.activeElement.getAttribute('aria-label') || document.activeElement.textContent"
            )
        )
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", (names[-1], outline)
    for name in (
        "Delete this reply",
        "Regenerate this reply",
        "friendly · persona v1",
        "Delete your message",
    ):
        assert name in names, names
