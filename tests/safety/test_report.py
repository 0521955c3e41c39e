"""`avatar-chat safety-report --year N`: the crisis referral notices of a calendar year,
counted from what the chat API did, with no user identifier and no message text in it,
and the same after an account is deleted; and the protocol it states.

The counts are exact: the chats run on a database of this test's own."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from avatar_chat.chat.safety_report import build_report, protocol, render_text
from avatar_chat.core.settings import ModerationProviderName, Settings
from avatar_chat.ops.migrate import migrate
from avatar_chat.ops.runtime import EMBEDDED_HANDOFF_ENV
from tests.support.apps import own_app
from tests.support.databases import fresh_database
from tests.support.factories import User, create_chat, create_user, history, send
from tests.support.servers import CLI

CRISIS = ["I want to kill myself", "how do I kill myself", "I want to die"]
BLOCKED = "let's have sex"
CLEAN = "hello there, how was your day?"
CRISIS_NOTICE = "Call or text 988 now (report test)."


@dataclass
class Chats:
    dsn: str
    owner: asyncpg.Connection
    client: httpx.AsyncClient
    users: list[User]
    conversations: list[str]


@pytest.fixture
async def chats(database_url: str, settings: Settings) -> AsyncIterator[Chats]:
    async with fresh_database(database_url) as dsn:
        await migrate(dsn)
        owner = await asyncpg.connect(dsn)
        try:
            async with own_app(settings, database_url=SecretStr(dsn), safety_crisis_notice=CRISIS_NOTICE) as (
                client,
                _,
            ):
                users = [await create_user(owner) for _ in range(3)]
                conversations = [await create_chat(client, user) for user in users]
                yield Chats(dsn, owner, client, users, conversations)
        finally:
            await owner.close()


async def run_report(dsn: str, cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """The command as an operator runs it: its exit code, stdout and stderr."""
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", EMBEDDED_HANDOFF_ENV)},
        "DATABASE_URL": dsn,
        "LOG_LEVEL": "WARNING",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "safety-report",
        *args,
        env=environment,
        cwd=cwd,  # no .env of a developer's checkout
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def safety_report(dsn: str, cwd: Path, *args: str) -> tuple[str, str]:
    code, out, err = await run_report(
        dsn,
        cwd,
        *args,
        SAFETY_CRISIS_NOTICE=CRISIS_NOTICE,
        MODERATION_ACTIONS="violence=crisis,sexual/minors=block",
    )
    assert code == 0, err
    return out, err


async def report_json(dsn: str, tmp_path: Path, year: int) -> dict[str, Any]:
    out, _ = await safety_report(dsn, tmp_path, "--year", str(year), "--format", "json")
    data: dict[str, Any] = json.loads(out)
    return data


async def test_the_report_counts_the_notices_names_nobody_and_outlives_deleted_accounts(
    chats: Chats, tmp_path: Path
) -> None:
    first, second, third = chats.users
    for user, conversation, texts in (
        (first, chats.conversations[0], CRISIS[:2]),
        (second, chats.conversations[1], CRISIS[2:]),
        (third, chats.conversations[2], [BLOCKED, CLEAN]),
    ):
        for text in texts:
            response = await send(chats.client, user, conversation, text)
            assert response.status_code == (422 if text == BLOCKED else 201), response.text
    events = await chats.owner.fetch(
        "select user_id, direction, action,"
        " date_trunc('month', occurred_at at time zone 'UTC')::date as month from avatar_chat.safety_events"
    )
    assert sorted((e["user_id"], e["action"]) for e in events if e["direction"] == "in") == sorted(
        [(first.id, "crisis"), (first.id, "crisis"), (second.id, "crisis"), (third.id, "block")]
    )
    # The offline model echoes the message, so the replies after the crisis notices were
    # filtered: events of their own, which are no crisis notices.
    assert {e["action"] for e in events if e["direction"] == "out"} <= {"filter"}
    (month,) = {e["month"] for e in events}
    year = month.year

    expected_months = [{"month": f"{year}-{n:02d}", "total": 0, "by_category": {}} for n in range(1, 13)]
    by_category = {"self-harm": 3, "self-harm/intent": 3, "self-harm/instructions": 1}
    expected_months[month.month - 1] = {"month": f"{month:%Y-%m}", "total": 3, "by_category": by_category}

    def check(report: dict[str, Any]) -> None:
        notices = report["crisis_referral_notices"]
        assert notices["total"] == 3
        assert notices["by_category"] == by_category
        assert list(notices["by_category"]) == ["self-harm", "self-harm/intent", "self-harm/instructions"]
        assert notices["by_month"] == expected_months
        assert report["year"] == year
        assert report["period"] == {"from": f"{year}-01-01", "to": f"{year}-12-31", "time_zone": "UTC"}

    report = await report_json(chats.dsn, tmp_path, year)
    check(report)
    text, text_err = await safety_report(chats.dsn, tmp_path, "--year", str(year))
    assert "Crisis referral notices issued: 3\n" in text
    assert f"  {month:%Y-%m}         3  (self-harm 3, self-harm/intent 3, self-harm/instructions 1)" in text
    assert f"  {year}-01         0\n" in text or month.month == 1
    # The protocol, as the command's configuration states it.
    assert json.dumps(CRISIS_NOTICE) in text
    assert "    violence                 crisis\n" in text
    protocol = report["protocol"]
    assert protocol["crisis"]["notice"] == CRISIS_NOTICE
    assert protocol["actions"]["violence"] == "crisis"
    assert protocol["actions"]["self-harm/intent"] == "crisis"
    assert "harassment" not in protocol["actions"]  # allow: not listed
    assert protocol["minor_actions"]["sexual"] == "block"
    assert protocol["moderation"]["provider"] == "offline"
    assert protocol["moderation"]["fail_mode"] == "closed"

    # The year before: nothing.
    before = await report_json(chats.dsn, tmp_path, year - 1)
    assert before["crisis_referral_notices"]["total"] == 0
    assert before["crisis_referral_notices"]["by_category"] == {}
    assert [m["total"] for m in before["crisis_referral_notices"]["by_month"]] == [0] * 12

    # Nobody is named in it: no user, conversation or message id, no email, no text sent.
    message_ids = [
        str(m["id"])
        for user, conversation in zip(chats.users, chats.conversations, strict=True)
        for m in await history(chats.client, user, conversation)
    ]
    assert len(message_ids) >= 10
    secrets = [
        *(str(u.id) for u in chats.users),
        *(u.id.hex for u in chats.users),
        *(u.email for u in chats.users),
        *chats.conversations,
        *message_ids,
        *CRISIS,
        BLOCKED,
        CLEAN,
    ]
    json_out = json.dumps(report)
    for secret in secrets:
        for output in (json_out, text, text_err):
            assert secret.lower() not in output.lower(), secret

    # The first user deletes their account: their events go, the counts stay.
    assert (await chats.client.delete("/me", headers=first.headers)).status_code == 204
    assert (
        await chats.owner.fetchval(
            "select count(*) from avatar_chat.safety_events where user_id = $1", first.id
        )
        == 0
    )
    assert await chats.owner.fetchval("select count(*) from avatar_chat.safety_events") == sum(
        e["user_id"] != first.id for e in events
    )
    check(await report_json(chats.dsn, tmp_path, year))


async def test_a_database_without_the_report_function_is_told_to_migrate(
    database_url: str, tmp_path: Path
) -> None:
    async with fresh_database(database_url) as dsn:
        code, out, err = await run_report(dsn, tmp_path, "--year", "2026")
    assert (code, out) == (1, "")
    assert "error: the database has no avatar_chat.safety_report: run `avatar-chat migrate`" in err


async def test_actions_that_do_not_parse_are_told_before_the_database_is_reached(tmp_path: Path) -> None:
    code, out, err = await run_report(
        "postgresql://nobody@127.0.0.1:1/none",
        tmp_path,
        "--year",
        "2026",
        MODERATION_ACTIONS="self-harm=maybe",
    )
    assert (code, out) == (1, "")
    assert "error: MODERATION_ACTIONS: 'self-harm=maybe' is not category=allow|block|crisis" in err


def test_the_protocol_follows_the_settings() -> None:
    settings = Settings(
        _env_file=None,
        moderation_provider=ModerationProviderName.openai,
        moderation_actions="self-harm=block, sexual=allow, harassment=block",
        moderation_fail_mode="open",
        safety_crisis_mode="replace",
        safety_crisis_notices={"de": "Hilfe gibt es unter 0800 111 0 111."},
        safety_disclosure_notice="",
        safety_reminder_interval_minutes=60,
        safety_interaction_gap_minutes=15,
    )
    p = protocol(settings)
    assert p["moderation"]["provider"] == "openai"
    assert p["moderation"]["model"] == "omni-moderation-latest"
    assert p["moderation"]["fail_mode"] == "open"
    assert p["actions"] == {
        "harassment": "block",
        "harassment/threatening": "block",
        "hate/threatening": "block",
        "illicit/violent": "block",
        "self-harm": "block",
        "self-harm/instructions": "crisis",
        "self-harm/intent": "crisis",
        "sexual/minors": "block",
        "violence/graphic": "block",
    }
    # Whatever the operator allowed, a minor's sexual content is blocked.
    assert p["minor_actions"]["sexual"] == "block"
    assert p["minor_actions"]["sexual/minors"] == "block"
    assert p["crisis"]["mode"] == "replace"
    assert p["crisis"]["notices_by_language"] == {"de": "Hilfe gibt es unter 0800 111 0 111."}
    assert p["disclosure"]["notice"] is None
    assert p["suitability"]["notice"] == "AI companions may not be suitable for some minors."
    assert (
        p["disclosure"]["safety_reminder_interval_minutes"],
        p["disclosure"]["safety_interaction_gap_minutes"],
    ) == (
        60,
        15,
    )

    text = render_text(build_report(2026, [], p, now=dt.datetime(2027, 1, 5, tzinfo=dt.UTC)))
    assert "Crisis referral notices issued: 0\n" in text
    assert "  AI disclosure: off" in text
    assert '  Suitability notice: "AI companions may not be suitable for some minors."' in text
    assert '    Crisis notice (de): "Hilfe gibt es unter 0800 111 0 111."' in text
    assert "every 60 minutes" in text
    assert "Moderation: openai, model omni-moderation-latest" in text

    none = protocol(Settings(_env_file=None, moderation_provider=ModerationProviderName.none))
    assert none["moderation"]["checked"] is False
    assert none["moderation"]["model"] is None
