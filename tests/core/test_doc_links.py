"""The README and docs/*.md link only to what exists; the README reaches every page and
shows every screenshot in docs/.

Every relative link (markdown `[text](target)`, and `src`/`href` in HTML) must name a file
or folder of this repository; a `#fragment` on a markdown page must be one of that page's
headings, as GitHub makes their anchors. Links inside code are not links and are skipped,
and so are absolute URLs.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"\b(?:src|href)\s*=\s*\"([^\"]+)\"")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """The fragments GitHub gives the page's headings (`-1`, `-2`... for repeats)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(page: Path) -> list[str]:
    prose = _prose(page.read_text())
    return _MD_LINK.findall(prose) + _HTML_LINK.findall(prose)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if _SCHEME.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / unquote(path_part) if path_part else page).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
            broken.append(f"{target}: no heading with that anchor in {resolved.relative_to(ROOT)}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links(ROOT / "README.md")
        if not _SCHEME.match(target)
    }
    assert [str(page.relative_to(ROOT)) for page in PAGES[1:] if page not in linked] == []


def test_the_readme_shows_every_screenshot_in_docs() -> None:
    shown = {(ROOT / target).resolve() for target in links(ROOT / "README.md") if not _SCHEME.match(target)}
    images = sorted((ROOT / "docs").glob("*.png"))
    assert images
    assert [str(image.relative_to(ROOT)) for image in images if image not in shown] == []


def test_anchors_are_made_as_github_makes_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# The `avatar-chat` command\n## 1. Schema\n## Row level security (G5)\n"
        "## Notes\n## Notes\n```sh\n# not a heading\n```\n"
    )
    assert anchors(page) == {
        "the-avatar-chat-command",
        "1-schema",
        "row-level-security-g5",
        "notes",
        "notes-1",
    }
