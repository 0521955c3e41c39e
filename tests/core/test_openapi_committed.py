"""The committed openapi.json is the schema the app serves: client teams generate their
clients from it, so a change to the contract must show in review as a diff of that file
(./scripts/openapi rewrites it)."""

from __future__ import annotations

import difflib
import json

import pytest

from tests.support.openapi_spec import COMMITTED, REGENERATE, render, served


def test_the_committed_openapi_json_is_the_served_schema() -> None:
    text = render(served())
    assert COMMITTED.exists(), f"{COMMITTED.name} is missing: run {REGENERATE} and commit it"
    committed = COMMITTED.read_text(encoding="utf-8")
    if committed != text:
        diff = "".join(
            list(
                difflib.unified_diff(committed.splitlines(True), text.splitlines(True), "committed", "served")
            )[:80]
        )
        pytest.fail(
            f"{COMMITTED.name} differs from the schema the app serves: run {REGENERATE}, review the diff "
            f"(does it break generated clients?) and commit it.\n{diff}",
            pytrace=False,
        )


def test_the_schema_is_written_the_same_whatever_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = render(served())
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("MAX_BODY_BYTES", "1234")
    assert render(served()) == before
    assert json.loads(before)["openapi"].startswith("3.")
