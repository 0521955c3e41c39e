"""Accessibility of every view of the web client (issue #22): axe-core, vendored and
pinned in tests/web/vendor/ (scripts/vendor-axe-core; a test dependency, never served by
the app), is run in headless Chromium on the sign-in screen, the avatar creation screen,
the chat (a conversation holding replies, one streaming then stopped, safety notices, a
blocked message and the page's alert, the usage meter; a reply's alternatives, the edit
form, the delete confirmation), the avatar panel (its image dialog empty, with a preview
and with a refusal, the image shown; the persona history, a restore, opened at a reply's
version), every menu and dialog (account menu, import dialog, character card menu and
dialog, with their refusals; delete my account, and the sign-in it lands on), at phone
width (375 px) and desktop width, light and dark. No violation of impact "serious" or
"critical" may be found; a failure lists each rule's impact, help, the offending
elements' selectors and the views it was found on. Select with `-m browser`.

axe is injected with `page.evaluate` of its source, not `page.add_script_tag`: the page's
Content-Security-Policy (`script-src 'self'`) refuses an inline <script>, which is what
add_script_tag adds, and the pages are checked as served, so the CSP stays on
(`bypass_csp` would check another page). Code evaluated through the DevTools protocol is
not subject to the page's CSP, and axe runs under it (nothing it does on these pages
needs eval).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from avatar_chat.core.settings import Settings
from tests.support.servers import ServerProcess
from tests.web.test_browser import (
    DESKTOP,
    PHONE,
    _chromium,
    _create_avatar,
    _database,
    _embedded_server,
    _page,
    _replies,
    _send,
    _sign_in,
    _user_id,
    _watch,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VENDOR = Path(__file__).resolve().parent / "vendor"
BLOCKING = ("serious", "critical")
MAX_NODES = 6

# The operator's notices on (the disclosure, and the defaults of the others), and the
# offline moderation's rules (self-harm -> crisis, sexual -> block), so that a
# conversation shows every kind of notice; replies slow enough to be seen streaming.
DISCLOSURE = "You are chatting with an AI, not a person (accessibility test)."
SAFETY_ENV = {
    "SAFETY_DISCLOSURE_NOTICE": DISCLOSURE,
    "SAFETY_SUITABILITY_NOTICE": Settings.model_fields["safety_suitability_notice"].default,
    "SAFETY_CRISIS_NOTICE": Settings.model_fields["safety_crisis_notice"].default,
    "SAFETY_CRISIS_MODE": "precede",
    "MODERATION_FILTERED_TEXT": Settings.model_fields["moderation_filtered_text"].default,
    "MODERATION_PROVIDER": "offline",
    "MODERATION_ACTIONS": "",
    "MODERATION_OUTPUT_MODE": "stream",
    "OFFLINE_LLM_CHUNK_DELAY_MS": "100",
}
LONG = (
    "Tell me a long story, please, about a lighthouse keeper on a small island, a storm that "
    "lasts three days and three nights, a lost cat that nobody can find, a ship in trouble "
    "far out at sea, and how all of them are fine in the end when the morning comes at last"
)


AXE_BUILDS = sorted(VENDOR.glob("axe-core@*/axe.min.js"))
AXE_VERSION = AXE_BUILDS[0].parent.name if AXE_BUILDS else "axe-core (missing)"


@pytest.fixture(scope="module")
def axe_source() -> str:
    assert len(AXE_BUILDS) == 1, f"one vendored axe-core expected (scripts/vendor-axe-core): {AXE_BUILDS}"
    return AXE_BUILDS[0].read_text()


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ServerProcess]:
    async with _embedded_server(tmp_path_factory.mktemp("web-a11y"), workers=2, env=SAFETY_ENV) as proc:
        yield proc


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Violation:
    """One rule broken, where (selector -> the element's HTML and what to fix), and on
    which views."""

    rule: str
    impact: str
    help: str
    url: str
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.rule} ({self.impact}): {self.help} <{self.url}>", f"  on: {'; '.join(self.views)}"]
        for target, (html, summary) in list(self.nodes.items())[:MAX_NODES]:
            lines.append(f"  - {target}\n      {html}\n      {summary}")
        if len(self.nodes) > MAX_NODES:
            lines.append(f"  - and {len(self.nodes) - MAX_NODES} more elements")
        return "\n".join(lines)


class Audit:
    """axe run on the page as it is, view after view; what is serious or critical kept,
    each rule once with the elements and views it was found on."""

    def __init__(self, page: Page, axe_source: str) -> None:
        self.page = page
        self.axe_source = axe_source
        self.checked: list[str] = []
        self.found: dict[str, Violation] = {}

    async def check(self, view: str) -> None:
        if not await self.page.evaluate("() => typeof window.axe === 'object'"):
            await self.page.evaluate(self.axe_source + "\n;0")  # again after a reload
        violations: list[dict[str, Any]] = await self.page.evaluate(
            """async () => {
                const results = await axe.run(document, { resultTypes: ["violations"] });
                return results.violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                    nodes: v.nodes.map((n) => ({
                        target: n.target.join(" "), impact: n.impact, html: n.html.slice(0, 200),
                        summary: n.failureSummary,
                    })),
                }));
            }"""
        )
        self.checked.append(view)
        for v in violations:
            nodes = [n for n in v["nodes"] if (n["impact"] or v["impact"]) in BLOCKING]
            if not nodes:
                continue
            found = self.found.setdefault(v["id"], Violation(v["id"], v["impact"], v["help"], v["helpUrl"]))
            found.views.append(view)
            for n in nodes:
                summary = " / ".join(line.strip() for line in (n["summary"] or "").splitlines()[:3])
                found.nodes.setdefault(n["target"], (n["html"], summary))


async def _open_details(page: Page, selector: str) -> None:
    details = page.locator(selector)
    if await details.get_attribute("open") is None:
        await details.locator("summary").first.click()
    await expect(details).to_have_attribute("open", "")


async def _close_details(page: Page, selector: str) -> None:
    details = page.locator(selector)
    if await details.get_attribute("open") is not None:
        await details.locator("summary").first.click()
    await expect(details).not_to_have_attribute("open", "")


async def _give_a_plan(server: ServerProcess, user_id: str) -> None:
    """A plan that limits messages, so that the chat shows the usage meter."""
    async with _database(server) as owner:
        await owner.execute(
            "insert into public.plans (name, messages_per_day) values ('a11y', 100)"
            " on conflict (name) do nothing"
        )
        await owner.execute(
            "insert into public.user_plans (user_id, plan) values ($1, 'a11y')", uuid.UUID(user_id)
        )


async def _walk(page: Page, server: ServerProcess, audit: Audit, tmp_path: Path) -> None:
    """Every view and dialog of the page, axe run on each."""
    await page.goto(server.base_url + "/app")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#suitability-sign-in")).to_be_visible()
    await audit.check("sign-in")

    await _sign_in(page, server, f"a11y-{uuid.uuid4().hex[:10]}@example.test")
    await expect(page.get_by_role("heading", name="Create your avatar")).to_be_visible()
    await _give_a_plan(server, await _user_id(page))
    await audit.check("create avatar")

    await page.get_by_role("button", name="Create from character card…").click()
    card_dialog = page.get_by_role("dialog", name="Create from character card")
    await expect(card_dialog).to_be_visible()
    await audit.check("create avatar > character card dialog")
    await card_dialog.get_by_role("button", name="Cancel").click()
    await expect(card_dialog).to_be_hidden()

    await page.get_by_role("button", name="Import an archive…").click()
    import_dialog = page.get_by_role("dialog", name="Import data")
    await expect(import_dialog).to_be_visible()
    await audit.check("create avatar > import dialog")
    await import_dialog.get_by_role("button", name="Close").click()
    await expect(import_dialog).to_be_hidden()

    await _create_avatar(page, "Ava", "friendly")
    await expect(page.get_by_role("meter", name="Messages today")).to_be_visible()
    await audit.check("chat, empty conversation")

    # A conversation with a reply, the AI disclosure, a crisis notice and a withheld reply.
    await _watch(await _send(page, "Hello there"))
    await _watch(await _send(page, "I want to kill myself"), until=("complete", "filtered"))
    # A reply streaming (Stop shown), then stopped (its Retry shown).
    reply = await _send(page, LONG)
    deadline = time.monotonic() + 10
    while not await reply.locator(".content").inner_text():
        assert time.monotonic() < deadline, "no text streamed in"
        await asyncio.sleep(0.03)
    await audit.check("chat, a reply streaming")
    # The stop's answer is awaited: the stream can end first, and a send made before the
    # answer came would be cut by it (chat.js's stopReply aborts whatever streams then).
    async with page.expect_response(lambda r: r.url.endswith("/stop")):
        await page.get_by_role("button", name="Stop").click()
    await expect(reply).to_have_attribute("data-status", "stopped")
    await expect(reply.get_by_role("button", name="Retry this reply")).to_be_visible()
    # A message refused by moderation: shown as not sent, and the page's alert.
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    box = page.get_by_label("Message", exact=True)
    await box.fill("send me nudes")
    await box.press("Enter")
    await expect(page.locator("#messages > li.user").last).to_have_attribute("data-status", "blocked")
    await expect(page.locator("#notice")).to_be_visible()
    await expect(_replies(page)).to_have_count(3)
    await _open_details(page, "#conversations-panel")
    await audit.check("chat with messages, notices and the alert")

    await page.get_by_role("button", name="Dismiss").click()
    await _open_details(page, "#account-menu")
    await audit.check("account menu")
    await page.get_by_role("button", name="Import data…").click()
    await expect(import_dialog).to_be_visible()
    await audit.check("import dialog")
    not_a_zip = tmp_path / "not-a-zip.zip"
    not_a_zip.write_bytes(b"I am not a zip")
    await import_dialog.get_by_label("Archive (.zip)").set_input_files(not_a_zip)
    await import_dialog.get_by_role("button", name="Import", exact=True).click()
    await expect(page.locator("#import-message")).to_contain_text("This archive cannot be imported")
    await audit.check("import dialog, an archive refused")
    await import_dialog.get_by_role("button", name="Close").click()
    await expect(import_dialog).to_be_hidden()
    await _close_details(page, "#account-menu")

    await _open_details(page, "#card-menu")
    await audit.check("avatar panel, character card menu")
    await page.get_by_role("button", name="Create from character card…").click()
    await expect(card_dialog).to_be_visible()
    await expect(page.locator("#card-replace-warning")).to_be_visible()
    await audit.check("avatar panel > character card dialog (replacing)")
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": "world"}')
    await card_dialog.get_by_label("Character card (.png or .json)").set_input_files(junk)
    await card_dialog.get_by_role("button", name="Replace my avatar", exact=True).click()
    await expect(page.locator("#card-message")).to_contain_text("This character card cannot be used")
    await audit.check("character card dialog, a card refused")
    await card_dialog.get_by_role("button", name="Cancel").click()
    await expect(card_dialog).to_be_hidden()

    # History as loaded after a reload, the persona switched.
    await page.reload()
    await expect(page.locator("#messages > li.user")).to_have_count(4)
    await page.get_by_label("Persona", exact=True).select_option("witty")
    await expect(page.locator("#persona-status")).to_contain_text("witty")
    await audit.check("chat reloaded, persona switched")

    await _avatar_panel(page, audit, tmp_path)
    await _message_tools(page, audit)
    await _delete_account(page, audit)


def _picture(path: Path) -> Path:
    Image.new("RGB", (256, 256), (230, 120, 40)).save(path, "PNG")
    return path


async def _avatar_panel(page: Page, audit: Audit, tmp_path: Path) -> None:
    """The avatar's image (its dialog: empty, a preview, a refusal; then shown in the panel
    and beside the replies) and the persona history (versions, a restore)."""
    await page.get_by_role("button", name="Avatar image…").click()
    image_dialog = page.get_by_role("dialog", name="Avatar image")
    await expect(image_dialog).to_be_visible()
    await audit.check("avatar image dialog, no image yet")
    await image_dialog.get_by_label("Choose an image").set_input_files(_picture(tmp_path / "me.png"))
    await expect(image_dialog.locator("#image-preview")).to_be_visible()
    await audit.check("avatar image dialog, a preview")
    await image_dialog.get_by_role("button", name="Upload").click()
    await expect(image_dialog).to_be_hidden()
    await expect(page.locator("#avatar-image")).to_be_visible()
    await page.wait_for_function("() => document.querySelector('#avatar-image').complete")
    await audit.check("avatar panel with its image")

    await page.get_by_role("button", name="Avatar image…").click()
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image at all\n")
    await image_dialog.get_by_label("Choose an image").set_input_files(notes)
    await image_dialog.get_by_role("button", name="Upload").click()
    await expect(image_dialog.locator("#image-message")).to_have_attribute("role", "alert")
    await audit.check("avatar image dialog, an image refused")
    await image_dialog.get_by_role("button", name="Close").click()
    await expect(image_dialog).to_be_hidden()

    await page.get_by_role("button", name="Persona history…").click()
    history = page.get_by_role("dialog", name="Persona history")
    await expect(history).to_be_visible()
    await expect(history.locator("#history-list > li")).to_have_count(3)
    await audit.check("persona history")
    await history.get_by_role("button", name="Restore version 1").click()
    await expect(history.locator("#history-message")).to_contain_text("Restored version 1")
    await audit.check("persona history, a version restored")
    await history.get_by_role("button", name="Close").click()
    await expect(history).to_be_hidden()
    # A reply's persona label opens the history at its version.
    await _replies(page).first.locator("button.persona").click()
    await expect(history.locator('#history-list > li[aria-current="true"]')).to_be_visible()
    await audit.check("persona history opened at a reply's version")
    await history.get_by_role("button", name="Close").click()
    await expect(history).to_be_hidden()


async def _message_tools(page: Page, audit: Audit) -> None:
    """Regenerate, the alternatives (n/m), the edit form, the delete confirmation."""
    await _watch(await _send(page, "One more, please"))
    await expect(page.locator("#avatar-image")).to_be_visible()
    reply = _replies(page).last
    old_id = await reply.get_attribute("data-id")
    await reply.get_by_role("button", name="Regenerate this reply").click()
    await expect(_replies(page).last).not_to_have_attribute("data-id", old_id or "")
    await _watch(_replies(page).last)
    await expect(
        _replies(page).last.get_by_role("group", name="Alternative replies: Reply 2 of 2")
    ).to_be_visible()
    await audit.check("chat, a reply with alternatives")

    latest = page.locator("#messages > li.user").last
    await latest.get_by_role("button", name="Edit your message").click()
    await expect(latest.get_by_role("textbox", name="Edit your message")).to_be_focused()
    await audit.check("chat, editing the latest message")
    await page.keyboard.press("Escape")
    await expect(latest.get_by_role("textbox")).to_have_count(0)

    await latest.get_by_role("button", name="Delete your message").click()
    confirm = page.get_by_role("dialog")
    await expect(confirm).to_be_visible()
    await audit.check("delete a message, the confirmation")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()


async def _delete_account(page: Page, audit: Audit) -> None:
    """Delete my account: the confirmation, then the sign-in it lands on."""
    await _open_details(page, "#account-menu")
    await page.get_by_role("button", name="Delete my account…").click()
    confirm = page.get_by_role("dialog", name="Delete my account")
    await expect(confirm).to_be_visible()
    await audit.check("delete my account, the confirmation")
    await confirm.get_by_role("button", name="Delete my account", exact=True).click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await audit.check("sign-in after the account was deleted")


Width = Literal["phone", "desktop"]
VIEWPORTS: dict[Width, tuple[ViewportSize, dict[str, Any]]] = {
    "phone": (PHONE, {"device_scale_factor": 2, "is_mobile": True, "has_touch": True}),
    "desktop": (DESKTOP, {}),
}


@pytest.mark.parametrize(
    ("width", "scheme"), [("phone", "light"), ("desktop", "light"), ("phone", "dark"), ("desktop", "dark")]
)
async def test_no_serious_or_critical_violation_on_any_view(
    server: ServerProcess,
    browser: Browser,
    axe_source: str,
    tmp_path: Path,
    width: Width,
    scheme: Literal["light", "dark"],
) -> None:
    viewport, options = VIEWPORTS[width]
    async with _page(browser, viewport, color_scheme=scheme, **options) as page:
        audit = Audit(page, axe_source)
        await _walk(page, server, audit, tmp_path)
    assert len(audit.checked) >= 25, audit.checked
    found = "\n".join(str(v) for v in audit.found.values())
    where = f"{width} ({viewport['width']} px), {scheme}"
    assert not audit.found, f"axe {AXE_VERSION} found serious or critical violations at {where}:\n{found}"
