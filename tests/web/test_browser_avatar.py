"""The avatar panel and the account of the web client end to end (issue #22), in headless
Chromium against `avatar-chat serve --workers 2` on the embedded default, as
tests/web/test_browser.py runs it (its fixtures and helpers are imported from there): an
image uploaded (made with Pillow, previewed first) and shown in the panel from its signed
URL under the page's CSP, a text file refused with the API's 415, the image removed; an
edit made as in the Supabase dashboard (SQL as the database owner) listed in the persona
history with what changed, a version restored, and a 412 when the avatar changed
meanwhile; the history read a page at a time, and opened at a reply's version; deleting
the account (a 503 that offers to finish it, then the sign-in; the token is refused
after); at 375 px, the keyboard, the labels and a photo from the camera's input.
Screenshots (the panel with its image, the history and the image dialog at phone width)
go to test-artifacts/. Select with `-m browser`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import Browser, ConsoleMessage, Page, Route, expect

from tests.support.servers import ServerProcess
from tests.web.test_browser import (
    PHONE,
    _create_avatar,
    _database,
    _email,
    _embedded_server,
    _open_account_menu,
    _page,
    _screenshot,
    _sign_in,
    _token,
    _user_id,
    browser,
    desktop,
    phone,
)

__all__ = ["browser", "desktop", "phone"]  # the fixtures, used by name

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIGNED_URL = "/storage/v1/object/sign/avatars/"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    env = {"OFFLINE_LLM_CHUNK_DELAY_MS": "20"}
    async with _embedded_server(tmp_path_factory.mktemp("web-avatar"), workers=2, env=env) as proc:
        yield proc


def _csp_violations(page: Page) -> list[str]:
    """Console messages about the Content-Security-Policy (an image or script it blocked)."""
    found: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            found.append(message.text)

    page.on("console", seen)
    return found


async def _fits_the_width(page: Page) -> None:
    """Nothing wider than the window (no sideways scrolling at 375 px)."""
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, overflow


def _picture(path: Path) -> Path:
    """A 640x480 JPEG photo-like picture (a gradient with a disc), as a camera would give."""
    image = Image.new("RGB", (640, 480))
    pixels = image.load()
    assert pixels is not None
    for x in range(640):
        for y in range(480):
            inside = (x - 320) ** 2 + (y - 240) ** 2 < 150**2
            pixels[x, y] = (230, 120, 40) if inside else (x * 255 // 640, y * 255 // 480, 180)
    image.save(path, "JPEG", quality=85)
    return path


async def _open_image_dialog(page: Page) -> Any:
    await page.get_by_role("button", name="Avatar image…").click()
    dialog = page.get_by_role("dialog", name="Avatar image")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_label("Choose an image")).to_be_focused()
    return dialog


async def test_an_image_uploaded_shown_in_the_panel_a_text_file_refused_and_removed(
    server: ServerProcess, desktop: Page, tmp_path: Path
) -> None:
    page = desktop
    violations = _csp_violations(page)
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "friendly")
    # No image yet: the name's initial.
    await expect(page.locator("#avatar-image")).to_be_hidden()
    await expect(page.locator("#avatar-initial")).to_have_text("A")
    await page.evaluate(
        """() => {
            window.imageEvents = [];
            document.addEventListener("avatar-image", (e) => window.imageEvents.push(e.detail));
        }"""
    )

    dialog = await _open_image_dialog(page)
    await expect(dialog.locator("#image-preview-caption")).to_have_text("Your avatar has no image yet.")
    await expect(dialog.get_by_role("button", name="Remove image")).to_be_hidden()
    photo = _picture(tmp_path / "me.jpg")
    await dialog.get_by_label("Choose an image").set_input_files(photo)
    # Previewed from the file itself before anything is sent.
    preview = dialog.locator("#image-preview")
    await expect(preview).to_have_attribute("src", re.compile(r"^blob:"))
    await expect(dialog.locator("#image-preview-caption")).to_contain_text("me.jpg: not uploaded yet")
    assert await preview.evaluate("(img) => img.complete && img.naturalWidth") == 640

    async with page.expect_request(
        lambda r: r.method == "PUT" and r.url.endswith("/avatars/me/image")
    ) as put:
        await dialog.get_by_role("button", name="Upload").click()
    request = await put.value
    assert request.headers["content-type"] == "image/jpeg"
    assert request.headers["if-match"] == '"1"'
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.locator("#persona-status")).to_have_text("The new image is saved (version 2).")
    await expect(page.locator("#avatar-version")).to_have_text("2")
    shown = page.locator("#avatar-image")
    await expect(shown).to_be_visible()
    await expect(shown).to_have_attribute("alt", "Image of Ava")
    src = await shown.get_attribute("src")
    assert src is not None and src.startswith(server.base_url + SIGNED_URL) and "/128.webp?token=" in src, src
    # It loaded (the CSP's img-src lets the API's signed URLs in): a 128 or 512 px square.
    await page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=await shown.element_handle()
    )
    # Told to the rest of the page: {url128, url512, expiresAt}, an hour from now.
    events = await page.evaluate("window.imageEvents")
    assert len(events) == 1, events
    detail = events[0]
    assert set(detail) == {"url128", "url512", "expiresAt"}, detail
    assert detail["url128"] == src and "/512.webp?token=" in detail["url512"], detail
    now_ms = await page.evaluate("Date.now()")
    assert 3_500_000 < detail["expiresAt"] - now_ms <= 3_600_000, detail
    await _screenshot(page, "web-client-avatar.png")

    # A text file: the API's 415 in its own words; the image stays.
    dialog = await _open_image_dialog(page)
    await expect(dialog.locator("#image-preview-caption")).to_have_text("Your avatar's image now.")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image at all\n")
    await dialog.get_by_label("Choose an image").set_input_files(notes)
    async with page.expect_response(lambda r: r.request.method == "PUT") as refused:
        await dialog.get_by_role("button", name="Upload").click()
    assert (await refused.value).status == 415
    message = dialog.locator("#image-message")
    await expect(message).to_have_text("Upload a PNG, JPEG or WebP image.")
    await expect(message).to_have_attribute("role", "alert")
    await expect(page.locator("#avatar-version")).to_have_text("2")

    # Remove it: a new version, the initial again, told as null.
    await dialog.get_by_role("button", name="Remove image").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.locator("#persona-status")).to_have_text("The image was removed (version 3).")
    await expect(shown).to_be_hidden()
    await expect(page.locator("#avatar-initial")).to_be_visible()
    assert (await page.evaluate("window.imageEvents"))[-1] is None
    async with server.client() as client:
        gone = await client.get(
            "/avatars/me/image", headers={"Authorization": f"Bearer {await _token(page)}"}
        )
    assert gone.status_code == 404, gone.text
    assert violations == [], violations


async def test_a_dashboard_edit_is_in_the_history_and_a_version_is_restored_at_phone_width(
    server: ServerProcess, phone: Page
) -> None:
    page = phone
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "friendly")
    await page.get_by_label("Persona", exact=True).select_option("witty")
    await expect(page.locator("#avatar-version")).to_have_text("2")
    # Edited in the Supabase dashboard: plain SQL on the table, as the database owner.
    async with _database(server) as owner:
        await owner.execute(
            "update public.avatars set backstory = $1 where user_id = $2",
            "Grew up by the sea. Edited in the dashboard.",
            uuid.UUID(await _user_id(page)),
        )

    await page.get_by_role("button", name="Persona history…").click()
    dialog = page.get_by_role("dialog", name="Persona history")
    await expect(dialog).to_be_visible()
    items = dialog.locator("#history-list > li")
    await expect(items).to_have_count(3)
    await expect(items.nth(0)).to_contain_text("Version 3 · current")
    await expect(items.nth(0).locator(".history-changes")).to_have_text(
        "Backstory added: “Grew up by the sea. Edited in the dashboard.”"
    )
    await expect(items.nth(1).locator(".history-changes")).to_have_text("Personality: friendly → witty.")
    await expect(items.nth(2).locator(".history-changes")).to_have_text("Created as Ava (friendly).")
    assert await items.nth(0).locator("time").get_attribute("datetime")
    # The panel caught up with the edit made elsewhere.
    await expect(page.locator("#avatar-version")).to_have_text("3")
    await expect(items.nth(0).get_by_role("button")).to_have_count(0)  # the current one: no restore
    await _fits_the_width(page)
    await _screenshot(page, "web-client-history.png")

    # Restore version 1 with the keyboard: a new version 4 with its persona.
    restore = dialog.get_by_role("button", name="Restore version 1")
    await restore.focus()
    await page.keyboard.press("Enter")
    await expect(dialog.locator("#history-message")).to_have_text(
        "Restored version 1 as version 4; the next reply uses it."
    )
    await expect(items).to_have_count(4)
    await expect(items.nth(0)).to_contain_text("Version 4 · current")
    await expect(items.nth(0)).to_be_focused()
    await expect(items.nth(0).locator(".history-changes")).to_have_text(
        "Personality: witty → friendly; backstory removed."
    )
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.get_by_role("button", name="Persona history…")).to_be_focused()
    await expect(page.locator("#avatar-version")).to_have_text("4")
    await expect(page.get_by_label("Persona", exact=True)).to_have_value("friendly")

    # A reply's "persona vN" tells its version: the history opens there.
    await page.evaluate('document.dispatchEvent(new CustomEvent("persona-version", {detail: {version: 2}}))')
    await expect(dialog).to_be_visible()
    marked = dialog.locator('#history-list > li[aria-current="true"]')
    await expect(marked).to_have_attribute("data-version", "2")
    await expect(marked).to_be_focused()
    await dialog.get_by_role("button", name="Close").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)


async def test_a_restore_after_a_change_elsewhere_is_a_412_that_shows_the_avatar_as_it_is(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "friendly")
    await page.get_by_label("Persona", exact=True).select_option("caring")
    await expect(page.locator("#avatar-version")).to_have_text("2")
    await page.get_by_role("button", name="Persona history…").click()
    dialog = page.get_by_role("dialog", name="Persona history")
    items = dialog.locator("#history-list > li")
    await expect(items).to_have_count(2)

    # Meanwhile, another device switches the persona: this page's ETag is stale.
    async with server.client() as client:
        switched = await client.patch(
            "/avatars/me/persona",
            json={"personality": "playful"},
            headers={"Authorization": f"Bearer {await _token(page)}", "If-Match": '"2"'},
        )
    assert switched.status_code == 200, switched.text

    async with page.expect_response(lambda r: "/avatars/me/restore/1" in r.url) as answered:
        await dialog.get_by_role("button", name="Restore version 1").click()
    assert (await answered.value).status == 412
    message = dialog.locator("#history-message")
    await expect(message).to_have_text(
        "Your avatar changed meanwhile (it is now version 3); nothing was restored. "
        "This shows it as it is now: restore version 1 again if you still want it."
    )
    await expect(message).to_have_attribute("role", "alert")
    await expect(items).to_have_count(3)
    await expect(items.nth(0)).to_contain_text("Version 3 · current")
    await expect(items.nth(0).locator(".history-changes")).to_have_text("Personality: caring → playful.")
    await expect(page.locator("#avatar-version")).to_have_text("3")
    await expect(page.get_by_label("Persona", exact=True)).to_have_value("playful")
    await expect(dialog.get_by_role("button", name="Restore version 1")).to_be_focused()
    # Asked again, knowing: it goes through.
    await page.keyboard.press("Enter")
    await expect(message).to_have_text("Restored version 1 as version 4; the next reply uses it.")
    await expect(page.get_by_label("Persona", exact=True)).to_have_value("friendly")


async def test_delete_my_account_names_what_goes_finishes_after_a_503_and_lands_on_sign_in(
    server: ServerProcess, desktop: Page, tmp_path: Path
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "witty")
    dialog = await _open_image_dialog(page)
    await dialog.get_by_label("Choose an image").set_input_files(_picture(tmp_path / "me.jpg"))
    await dialog.get_by_role("button", name="Upload").click()
    await expect(page.locator("#avatar-image")).to_be_visible()
    token = await _token(page)

    # Storage away: every attempt (the first, and api.js's four automatic retries) a 503.
    refused: list[str] = []

    async def storage_away(route: Route) -> None:
        if route.request.method != "DELETE" or len(refused) >= 5:
            await route.continue_()
            return
        refused.append(route.request.url)
        body = (
            '{"error": {"code": "storage_unavailable", "message": "Storage is unavailable; retry shortly."}}'
        )
        await route.fulfill(status=503, content_type="application/json", body=body)

    await page.route("**/me", storage_away)

    # From the account menu, with the keyboard.
    await _open_account_menu(page)
    delete = page.get_by_role("button", name="Delete my account…")
    await delete.focus()
    await page.keyboard.press("Enter")
    confirm = page.get_by_role("dialog", name="Delete my account")
    await expect(confirm).to_be_visible()
    listed = confirm.locator("#delete-account-list > li")
    await expect(listed).to_have_count(4)
    await expect(listed.nth(0)).to_contain_text("Your avatar Ava, its image and every version of its persona")
    await expect(listed.nth(1)).to_contain_text("Every conversation and every message")
    await expect(listed.nth(2)).to_contain_text("usage")
    await expect(listed.nth(3)).to_contain_text("Your account itself")
    await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice
    await page.keyboard.press("Shift+Tab")
    await expect(confirm.get_by_role("button", name="Delete my account", exact=True)).to_be_focused()
    await page.keyboard.press("Enter")

    message = confirm.locator("#delete-account-message")
    await expect(message).to_contain_text(
        "Storage is unavailable; retry shortly. Part of your account may already be deleted", timeout=30_000
    )
    await expect(message).to_have_attribute("role", "alert")
    assert len(refused) == 5, refused
    finish = confirm.get_by_role("button", name="Finish deleting")
    await expect(finish).to_be_visible()
    await finish.click()

    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#sign-in-message")).to_have_text(
        "Your account was deleted, with your avatar, conversations and usage."
    )
    await expect(page.locator("#account")).to_be_hidden()
    await expect(page.locator("#avatar-image")).to_be_hidden()
    # The token is refused from now on, on every route.
    async with server.client() as client:
        after = await client.get("/avatars/me", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401, after.text
    assert after.json()["error"]["code"] == "user_not_found"


async def test_the_avatar_panel_at_phone_width_keyboard_labels_and_a_photo(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    """At 375 px: the new controls reachable by Tab, labelled, with visible focus, nothing
    wider than the screen; a photo from the camera's input previewed, then uploaded."""
    async with _page(browser, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True) as page:
        await _sign_in(page, server, _email())
        await _create_avatar(page, "Ava", "friendly")
        await _fits_the_width(page)
        await page.get_by_label("Persona", exact=True).focus()
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("button", name="Avatar image…")).to_be_focused()
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid", outline
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("button", name="Persona history…")).to_be_focused()
        await page.keyboard.press("Shift+Tab")
        await page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Avatar image")
        await expect(dialog).to_be_visible()
        # On a phone, the camera too.
        await expect(dialog.get_by_label("Take a photo")).to_be_visible()
        assert await dialog.get_by_label("Take a photo").get_attribute("capture") == "user"
        await _fits_the_width(page)
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter((el) => !el.labels?.length && !el.getAttribute('aria-label'))
                .map((el) => el.id || el.name)"""
        )
        assert unlabelled == []
        await page.keyboard.press("Escape")
        await expect(page.get_by_role("dialog")).to_have_count(0)
        await expect(page.get_by_role("button", name="Avatar image…")).to_be_focused()

        # A photo taken with the camera: previewed, then sent.
        await page.keyboard.press("Enter")
        await dialog.get_by_label("Take a photo").set_input_files(_picture(tmp_path / "photo.jpg"))
        await expect(dialog.locator("#image-preview-caption")).to_contain_text("photo.jpg: not uploaded yet")
        await _fits_the_width(page)
        await _screenshot(page, "web-client-image-phone.png")
        await dialog.get_by_role("button", name="Upload").click()
        await expect(page.get_by_role("dialog")).to_have_count(0)
        await expect(page.locator("#avatar-image")).to_be_visible()
        await expect(page.get_by_role("button", name="Avatar image…")).to_be_focused()
        await _fits_the_width(page)


async def test_the_history_is_read_a_page_at_a_time_and_opens_at_an_old_version(
    server: ServerProcess, desktop: Page
) -> None:
    page = desktop
    await _sign_in(page, server, _email())
    await _create_avatar(page, "Ava", "friendly")
    user_id = uuid.UUID(await _user_id(page))
    async with _database(server) as owner:
        for n in range(2, 25):  # versions 2 to 24
            await owner.execute(
                "update public.avatars set backstory = $1 where user_id = $2", f"Day {n}.", user_id
            )

    await page.get_by_role("button", name="Persona history…").click()
    dialog = page.get_by_role("dialog", name="Persona history")
    items = dialog.locator("#history-list > li")
    await expect(items).to_have_count(20)  # a page
    await expect(items.nth(0)).to_contain_text("Version 24 · current")
    await expect(items.nth(0).locator(".history-changes")).to_have_text("Backstory: “Day 23.” → “Day 24.”")
    # The oldest of the page: its version before is on the next page, not read yet.
    await expect(items.nth(19).locator(".history-changes")).to_contain_text("shown with the older versions")
    more = dialog.get_by_role("button", name="Show older versions")
    await more.click()
    await expect(items).to_have_count(24)
    await expect(more).to_be_hidden()
    await expect(items.nth(20)).to_be_focused()  # the first of those just shown
    await expect(items.nth(19).locator(".history-changes")).to_have_text("Backstory: “Day 4.” → “Day 5.”")
    await expect(items.nth(23).locator(".history-changes")).to_have_text("Created as Ava (friendly).")
    await page.keyboard.press("Escape")

    # A reply of version 2: the history reads on until it is there.
    await page.evaluate('document.dispatchEvent(new CustomEvent("persona-version", {detail: {version: 2}}))')
    marked = dialog.locator('#history-list > li[aria-current="true"]')
    await expect(marked).to_have_attribute("data-version", "2")
    await expect(marked).to_be_focused()
    await expect(marked.locator(".history-changes")).to_have_text("Backstory added: “Day 2.”")
    await expect(items).to_have_count(24)
