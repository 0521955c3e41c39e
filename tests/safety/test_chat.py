"""Safety through the chat API (docs/safety.md): moderation of the user's message and of the
reply, the crisis protocol, the AI disclosure and break reminder cadences, minors.

Real Postgres, real migrations, in-process workers; the LLM is the fake OpenAI-compatible
server, the remote moderation providers are faked with respx (third-party HTTP only)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from pydantic import SecretStr

from avatar_chat.auth.tokens import mint_access_token
from avatar_chat.core.settings import Settings
from tests.fakes.moderation_answers import chat_body, moderation_body
from tests.fakes.openai_server import FakeOpenAIServer
from tests.support.apps import own_app
from tests.support.assertions import assert_error
from tests.support.databases import as_role, claims_of
from tests.support.factories import TEST_JWT_SECRET, User, create_chat, create_user, history, send
from tests.support.fake_llm import serve_fake_llm
from tests.support.metrics import metric, metric_samples
from tests.support.sse import parse_sse

DISCLOSURE = "You are chatting with an AI, not a person. [test]"
BREAK = "Time for a break? You are chatting with an AI. [test]"
CRISIS = "Call or text 988. [test]"
CRISIS_DE = "Telefonseelsorge: 0800 111 0 111. [test]"
FILTERED = "[withheld by the test's content filter]"
MODERATION_URL = "https://moderation.test/v1"
GUARD_URL = "http://guard.test/v1"


# A server of this module's own (`fake`, tests/conftest.py's, resets it for each test).
fake_llm = pytest.fixture(scope="module")(serve_fake_llm)


def safety_settings(settings: Settings, base_url: str, **overrides: object) -> Settings:
    return settings.model_copy(
        update={
            "llm_base_url": base_url,
            "llm_api_key": SecretStr("test-key"),
            "llm_max_retries": 0,
            "safety_disclosure_notice": DISCLOSURE,
            "safety_break_notice": BREAK,
            "safety_crisis_notice": CRISIS,
            "safety_crisis_notices": {"de": CRISIS_DE},
            "moderation_filtered_text": FILTERED,
            "moderation_output_check_chars": 40,
            **overrides,
        }
    )


@asynccontextmanager
async def worker(
    settings: Settings, fake: FakeOpenAIServer, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    async with own_app(safety_settings(settings, fake.base_url, **overrides)) as (client, _):
        yield client


@pytest.fixture
async def app(settings: Settings, fake: FakeOpenAIServer) -> AsyncIterator[httpx.AsyncClient]:
    async with worker(settings, fake) as client:
        yield client


@pytest.fixture
async def user(owner: asyncpg.Connection) -> User:
    return await create_user(owner)


def shape(messages: list[dict[str, Any]]) -> list[tuple[str, str | None, str]]:
    return [(m["role"], m.get("notice_kind"), m["status"]) for m in messages]


async def events(owner: asyncpg.Connection, user: User) -> list[asyncpg.Record]:
    return await owner.fetch(
        "select direction, action, categories, provider, conversation_id, message_id"
        " from avatar_chat.safety_events where user_id = $1 order by id",
        user.id,
    )


async def rewind(owner: asyncpg.Connection, user: User, minutes: float) -> None:
    """The clock moves `minutes` on for this user's interaction: what the cadences read."""
    await owner.execute(
        "update avatar_chat.interactions set started_at = started_at - make_interval(mins => $2),"
        " last_at = last_at - make_interval(mins => $2),"
        " disclosed_at = disclosed_at - make_interval(mins => $2),"
        " reminded_at = reminded_at - make_interval(mins => $2) where user_id = $1",
        user.id,
        minutes,
    )


# --- moderation in: caught and missed phrases, crisis, block -----------------------------


@pytest.mark.parametrize(
    "text",
    ["I want to kill myself", "I don't want to live anymore", "what's the most painless way to end my life"],
)
async def test_a_crisis_message_gets_the_crisis_notice_before_the_reply(
    app: httpx.AsyncClient, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User, text: str
) -> None:
    fake.reply = "I am really sorry you are feeling this way. You matter, and talking helps."
    chat = await create_chat(app, user)
    answer = await send(app, user, chat, text)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert [(n["notice_kind"], n["content"]) for n in body["notices"]] == [
        ("disclosure", DISCLOSURE),
        ("crisis", CRISIS),
    ]
    assert body["assistant_message"]["status"] == "complete"
    assert shape(await history(app, user, chat)) == [
        ("notice", "disclosure", "complete"),
        ("user", None, "complete"),
        ("notice", "crisis", "complete"),
        ("assistant", None, "complete"),
    ]
    # The persona never overrides it: the notice is not the model's and not in its prompt.
    prompt = fake.requests[-1]["messages"]
    assert not any(CRISIS in str(m["content"]) or DISCLOSURE in str(m["content"]) for m in prompt)
    recorded = await events(owner, user)
    assert [(e["direction"], e["action"], e["provider"]) for e in recorded] == [("in", "crisis", "offline")]
    assert "self-harm" in recorded[0]["categories"]
    assert recorded[0]["message_id"] == uuid.UUID(body["notices"][1]["id"])


@pytest.mark.parametrize(
    "text", ["this deadline is killing me", "I could die laughing", "sex education at school"]
)
async def test_near_misses_go_through_untouched(
    app: httpx.AsyncClient, owner: asyncpg.Connection, user: User, text: str
) -> None:
    chat = await create_chat(app, user)
    answer = await send(app, user, chat, text)
    assert answer.status_code == 201, answer.text
    assert [n["notice_kind"] for n in answer.json()["notices"]] == ["disclosure"]
    assert await events(owner, user) == []


async def test_a_blocked_message_is_422_saved_as_blocked_and_never_reaches_the_model(
    app: httpx.AsyncClient, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    chat = await create_chat(app, user)
    answer = await send(app, user, chat, "send me nudes", key="k1")
    assert_error(answer, 422, "message_blocked")
    assert answer.json()["error"]["details"]["categories"] == ["sexual"]
    assert fake.requests == []
    messages = await history(app, user, chat)
    assert shape(messages) == [("notice", "disclosure", "complete"), ("user", None, "blocked")]
    assert messages[1]["content"] == "send me nudes"  # history is honest
    assert answer.json()["error"]["details"]["message_id"] == messages[1]["id"]
    # The same key again: the same answer, nothing added.
    again = await send(app, user, chat, "send me nudes", key="k1")
    assert_error(again, 422, "message_blocked")
    assert len(await history(app, user, chat)) == 2
    # The next message is answered, and the blocked one is not in its prompt.
    ok = await send(app, user, chat, "tell me about the weather")
    assert ok.status_code == 201, ok.text
    assert not any("nudes" in str(m["content"]) for m in fake.requests[-1]["messages"])
    assert [(e["direction"], e["action"], list(e["categories"])) for e in await events(owner, user)] == [
        ("in", "block", ["sexual"])
    ]


async def test_sse_streams_the_notices_before_the_reply(
    app: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    fake.reply = "I hear you. You are not alone."
    chat = await create_chat(app, user)
    headers = {**user.headers, "Accept": "text/event-stream"}
    answer = await app.post(
        f"/conversations/{chat}/messages", json={"content": "I want to die"}, headers=headers
    )
    assert answer.status_code == 201
    names = [name for name, _ in parse_sse(answer.text)]
    assert names[:4] == ["user_message", "notice", "notice", "assistant_message"] and names[-1] == "done"


async def test_crisis_notice_in_place_of_the_reply_and_in_the_clients_language(
    settings: Settings, fake: FakeOpenAIServer, user: User
) -> None:
    async with worker(settings, fake, safety_crisis_mode="replace") as app:
        chat = await create_chat(app, user)
        headers = {**user.headers, "Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
        answer = await app.post(
            f"/conversations/{chat}/messages", json={"content": "I want to die"}, headers=headers
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["assistant_message"] is None
        assert answer.json()["notices"][-1]["content"] == CRISIS_DE
        assert fake.requests == []
        sse = {**user.headers, "Accept": "text/event-stream", "Idempotency-Key": "s1"}
        streamed = await app.post(
            f"/conversations/{chat}/messages", json={"content": "I want to die"}, headers=sse
        )
        records = parse_sse(streamed.text)
        assert [name for name, _ in records] == ["user_message", "notice", "done"]
        assert records[-1][1]["notice_kind"] == "crisis" and records[-1][1]["content"] == CRISIS
        # A retry with the key gets the notice again, not a reply.
        replayed = await app.post(
            f"/conversations/{chat}/messages", json={"content": "I want to die"}, headers=sse
        )
        assert [name for name, _ in parse_sse(replayed.text)] == ["user_message", "notice", "done"]
        assert shape(await history(app, user, chat))[-2:] == [
            ("user", None, "complete"),
            ("notice", "crisis", "complete"),
        ]


async def test_operator_actions_are_configurable(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    async with worker(
        settings, fake, moderation_actions="sexual=allow, self-harm=block, self-harm/intent=block"
    ) as app:
        chat = await create_chat(app, user)
        assert (await send(app, user, chat, "let's have sex")).status_code == 201
        assert_error(await send(app, user, chat, "I want to kill myself"), 422, "message_blocked")


def test_a_bad_action_is_refused_at_start() -> None:
    from avatar_chat.chat.moderation import parse_actions

    with pytest.raises(ValueError, match="category=allow"):
        parse_actions("sexual=maybe")


# --- remote providers (respx) and their failures -------------------------------------------


# `remote` (tests/conftest.py): only the moderation hosts are faked.


async def test_openai_moderation_flags_and_scores(
    settings: Settings,
    fake: FakeOpenAIServer,
    owner: asyncpg.Connection,
    user: User,
    remote: respx.MockRouter,
) -> None:
    def moderate(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["input"]
        if "[[crisis]]" in text:
            return httpx.Response(
                200, json=moderation_body(scores={"self-harm": 0.93, "self-harm/intent": 0.9})
            )
        if "[[threat]]" in text:
            return httpx.Response(
                200, json=moderation_body(scores={"harassment/threatening": 0.8, "harassment": 0.9})
            )
        return httpx.Response(200, json=moderation_body())

    route = remote.post(f"{MODERATION_URL}/moderations").mock(side_effect=moderate)
    fake.reply = "A calm and kind reply."
    key = SecretStr("sk-x")
    async with worker(
        settings,
        fake,
        moderation_provider="openai",
        moderation_base_url=MODERATION_URL,
        moderation_api_key=key,
    ) as app:
        chat = await create_chat(app, user)
        crisis = await send(app, user, chat, "[[crisis]] a message the fake provider flags")
        assert crisis.status_code == 201, crisis.text
        assert crisis.json()["notices"][-1]["notice_kind"] == "crisis"
        sent = route.calls[0].request
        assert sent.headers["authorization"] == "Bearer sk-x"
        assert json.loads(sent.content) == {
            "model": "omni-moderation-latest",
            "input": "[[crisis]] a message the fake provider flags",
        }
        # The reply was checked too, with the same provider.
        assert {"input": "A calm and kind reply."} in [
            {"input": json.loads(c.request.content)["input"]} for c in route.calls
        ]
        blocked = await send(app, user, chat, "[[threat]] another one")
        assert_error(blocked, 422, "message_blocked")
        assert blocked.json()["error"]["details"]["categories"] == ["harassment", "harassment/threatening"]
        metrics = (await app.get("/metrics")).text
        assert (
            'avatar_chat_moderation_flags_total{action="block",category="harassment/threatening",direction="in"}'
            in metrics
        )
        samples = metric_samples(metrics)
        # Every check of the replies was clean, counted once a reply ended; each one timed.
        replies_checked = len([c for c in route.calls if "calm" in json.loads(c.request.content)["input"]])
        assert (
            metric(samples, "avatar_chat_moderation_checks_total", direction="out", result="clean")
            == replies_checked
        )
        assert metric(samples, "avatar_chat_moderation_seconds_count") == len(route.calls)
    recorded = await events(owner, user)
    assert [(e["action"], e["provider"]) for e in recorded] == [("crisis", "openai"), ("block", "openai")]


async def test_llama_guard_codes_map_onto_the_same_categories(
    settings: Settings, fake: FakeOpenAIServer, user: User, remote: respx.MockRouter
) -> None:
    route = remote.post(f"{GUARD_URL}/chat/completions")
    async with worker(
        settings, fake, moderation_provider="llama-guard", moderation_base_url=GUARD_URL
    ) as app:
        chat = await create_chat(app, user)
        route.respond(json=chat_body("unsafe\nS11"))
        assert (await send(app, user, chat, "guard says S11")).json()["notices"][-1][
            "notice_kind"
        ] == "crisis"
        route.respond(json=chat_body("unsafe\nS12"))
        assert_error(await send(app, user, chat, "guard says S12"), 422, "message_blocked")
        route.respond(json=chat_body("safe"))
        assert (await send(app, user, chat, "guard says safe")).status_code == 201


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line of the test, with its traceback if any, as the handlers would write it."""
    formatter = logging.Formatter("%(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


@pytest.mark.parametrize("failure", ["status_500", "timeout", "garbage"])
async def test_fail_closed_refuses_and_writes_nothing(
    settings: Settings,
    fake: FakeOpenAIServer,
    user: User,
    remote: respx.MockRouter,
    failure: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    said = f"hello there, my diary {uuid.uuid4().hex}"
    route = remote.post(f"{MODERATION_URL}/moderations")
    if failure == "status_500":
        route.respond(500, json={"error": {"message": "boom"}})
    elif failure == "timeout":
        route.side_effect = httpx.ReadTimeout("slow")
    else:
        route.respond(200, text="<html>not json</html>")
    async with worker(
        settings,
        fake,
        moderation_provider="openai",
        moderation_base_url=MODERATION_URL,
        moderation_timeout_s=0.5,
    ) as app:
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, said)
        assert_error(answer, 503, "moderation_unavailable")
        assert answer.headers["retry-after"] == "2"
        assert await history(app, user, chat) == []  # nothing saved, nothing sent to the model
        assert fake.requests == []
        metrics = (await app.get("/metrics")).text
        assert 'avatar_chat_moderation_checks_total{direction="in",result="unavailable"}' in metrics
    # The failure is logged (if at all) without what the user said.
    assert said not in _logged(caplog)


async def test_fail_closed_stops_a_reply_whose_check_fails(
    settings: Settings, fake: FakeOpenAIServer, user: User, remote: respx.MockRouter
) -> None:
    def moderate(request: httpx.Request) -> httpx.Response:
        # The user's message passes; every check of the reply finds the provider down.
        if json.loads(request.content)["input"] == "hello there":
            return httpx.Response(200, json=moderation_body())
        return httpx.Response(500)

    remote.post(f"{MODERATION_URL}/moderations").mock(side_effect=moderate)
    fake.reply = "A reply long enough to be checked while it streams. " * 3
    provider = {"moderation_provider": "openai", "moderation_base_url": MODERATION_URL}
    async with worker(settings, fake, **provider) as app:
        chat = await create_chat(app, user)
        headers = {**user.headers, "Accept": "text/event-stream"}
        answer = await app.post(
            f"/conversations/{chat}/messages", json={"content": "hello there"}, headers=headers
        )
        records = parse_sse(answer.text)
        assert records[-1][0] == "error" and records[-1][1]["code"] == "moderation_unavailable"
        shown = "".join(d["content"] for name, d in records if name == "delta")
        # Stopped at the first check (after 40 characters here): what went out before it is kept.
        assert fake.reply.startswith(shown) and len(shown) < 40 + len("streams. ")
        reply = (await history(app, user, chat))[-1]
        assert (reply["status"], reply["error_code"], reply["content"]) == (
            "failed",
            "moderation_unavailable",
            shown,
        )


async def test_fail_open_goes_on_and_is_recorded(
    settings: Settings,
    fake: FakeOpenAIServer,
    owner: asyncpg.Connection,
    user: User,
    remote: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    said = f"hello there, my diary {uuid.uuid4().hex}"
    remote.post(f"{MODERATION_URL}/moderations").respond(503)
    async with worker(
        settings,
        fake,
        moderation_provider="openai",
        moderation_base_url=MODERATION_URL,
        moderation_fail_mode="open",
    ) as app:
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, said)
        assert answer.status_code == 201, answer.text
        assert answer.json()["assistant_message"]["status"] == "complete"
    assert said not in _logged(caplog)
    recorded = await events(owner, user)
    assert ("in", "unchecked") in [(e["direction"], e["action"]) for e in recorded]
    assert ("out", "unchecked") in [(e["direction"], e["action"]) for e in recorded]


# --- moderation out ----------------------------------------------------------------------


async def test_a_flagged_reply_stops_and_is_saved_filtered(
    app: httpx.AsyncClient, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    fake.reply = (
        "Sure, here is a long and friendly answer for you. " * 3 + "Let's have sex. " + "More text. " * 20
    )
    chat = await create_chat(app, user)
    headers = {**user.headers, "Accept": "text/event-stream"}
    answer = await app.post(f"/conversations/{chat}/messages", json={"content": "hi"}, headers=headers)
    records = parse_sse(answer.text)
    assert records[-1][0] == "filtered"
    shown = "".join(d["content"] for name, d in records if name == "delta")
    assert "More text. More text. More text. More text." not in shown  # it stopped
    assert records[-1][1]["status"] == "filtered" and records[-1][1]["content"] == FILTERED
    messages = await history(app, user, chat)
    assert (messages[-1]["status"], messages[-1]["content"]) == ("filtered", FILTERED)
    stored = await owner.fetchval(
        "select content from public.messages where id = $1", uuid.UUID(messages[-1]["id"])
    )
    assert stored == FILTERED  # the flagged text is kept nowhere
    assert [(e["direction"], e["action"]) for e in await events(owner, user)] == [("out", "filter")]
    # JSON: the filtered reply as saved.
    again = await send(app, user, chat, "hi again")
    assert again.status_code == 201 and again.json()["assistant_message"]["status"] == "filtered"


async def test_hold_mode_lets_only_checked_text_out(
    settings: Settings, fake: FakeOpenAIServer, user: User
) -> None:
    fake.reply = (
        "A clean beginning that is long enough to pass a check. " + "I want to fuck you. " + "x " * 30
    )
    async with worker(settings, fake, moderation_output_mode="hold") as app:
        chat = await create_chat(app, user)
        headers = {**user.headers, "Accept": "text/event-stream"}
        answer = await app.post(f"/conversations/{chat}/messages", json={"content": "hi"}, headers=headers)
        records = parse_sse(answer.text)
        shown = "".join(d["content"] for name, d in records if name == "delta")
        assert "fuck" not in shown and records[-1][0] == "filtered"


# --- minors ---------------------------------------------------------------------------------


async def minor_by_row(owner: asyncpg.Connection) -> User:
    user = await create_user(owner)
    await owner.execute("insert into public.user_safety (user_id, minor) values ($1, true)", user.id)
    return user


async def minor_by_token(owner: asyncpg.Connection) -> User:
    user = await create_user(owner)
    token = mint_access_token(
        TEST_JWT_SECRET,
        user_id=user.id,
        email=user.email,
        extra={"app_metadata": {"provider": "email", "providers": ["email"], "minor": True}},
    )
    return User(user.id, user.email, token)


@pytest.mark.parametrize("make_minor", [minor_by_row, minor_by_token])
async def test_sexual_content_is_blocked_both_ways_for_a_minor_whatever_the_operator_set(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, make_minor: Any
) -> None:
    adult = await create_user(owner)
    minor = await make_minor(owner)
    async with worker(settings, fake, moderation_actions="sexual=allow") as app:
        adult_chat, minor_chat = await create_chat(app, adult), await create_chat(app, minor)
        # In: allowed for the adult, refused for the minor.
        assert (await send(app, adult, adult_chat, "let's have sex")).status_code == 201
        assert_error(await send(app, minor, minor_chat, "let's have sex"), 422, "message_blocked")
        # Out: the same reply is the adult's, and filtered for the minor.
        fake.reply = "Okay. I want to make love to you tonight, " + "and more words follow here. " * 5
        assert (await send(app, adult, adult_chat, "hello")).json()["assistant_message"][
            "status"
        ] == "complete"
        reply = (await send(app, minor, minor_chat, "hello")).json()["assistant_message"]
        assert (reply["status"], reply["content"]) == ("filtered", FILTERED)
        # Regenerating it is held to the same rule.
        regenerated = await app.post(
            f"/conversations/{minor_chat}/messages/{reply['id']}/regenerate", headers=minor.headers
        )
        assert regenerated.json()["assistant_message"]["status"] == "filtered", regenerated.text


async def test_users_cannot_mark_or_unmark_themselves(owner: asyncpg.Connection) -> None:
    user = await minor_by_row(owner)
    async with as_role(owner, "authenticated", claims_of(user)) as conn:
        assert await conn.fetchval("select minor from public.user_safety where user_id = $1", user.id) is True
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("update public.user_safety set minor = false where user_id = $1", user.id)
    async with as_role(owner, "authenticated", claims_of(user)) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("delete from public.user_safety where user_id = $1", user.id)
    async with as_role(owner, "authenticated", claims_of(user)) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select * from avatar_chat.safety_events")


# --- the cadences, with a clock the test moves --------------------------------------------


async def test_disclosure_at_each_conversations_start_and_every_3_hours_of_continuing_interaction(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection
) -> None:
    user = await create_user(owner)
    minor = await minor_by_row(owner)
    # Two workers: the cadence is the user's, whichever worker answers.
    async with worker(settings, fake) as one, worker(settings, fake) as two:
        apps = [one, two]
        for who in (user, minor):
            chat = await create_chat(one, who)
            kinds: list[list[str]] = []
            for n in range(10):  # a message every 20 minutes: 180 minutes at the 10th
                answer = await send(apps[n % 2], who, chat, f"message {n}")
                assert answer.status_code == 201, answer.text
                kinds.append([x["notice_kind"] for x in answer.json()["notices"]])
                await rewind(owner, who, 20)
            reminders = ["disclosure", "break"] if who is minor else ["disclosure"]
            assert kinds == [["disclosure"]] + [[]] * 8 + [reminders], kinds
            # A second conversation starts with the disclosure too.
            conversation = (await one.post("/conversations", json={}, headers=who.headers)).json()["id"]
            first = await send(two, who, conversation, "new conversation")
            assert [x["notice_kind"] for x in first.json()["notices"]] == ["disclosure"]
            # A gap longer than 30 minutes ends the interaction: the next one starts with the
            # disclosure, and a minor's break reminder counts from there.
            await rewind(owner, who, 31)
            again = await send(one, who, chat, "back again")
            assert [x["notice_kind"] for x in again.json()["notices"]] == ["disclosure"]
            await rewind(owner, who, 29)
            assert (await send(two, who, chat, "still here")).json()["notices"] == []


async def test_concurrent_first_sends_disclose_once_per_conversation(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    import asyncio

    async with worker(settings, fake) as one, worker(settings, fake) as two:
        chat = await create_chat(one, user)
        answers = await asyncio.gather(*(send((one, two)[n % 2], user, chat, f"hi {n}") for n in range(8)))
        assert all(a.status_code == 201 for a in answers)
        kinds = [m["notice_kind"] for m in await history(one, user, chat) if m["role"] == "notice"]
        assert kinds == ["disclosure"]


# --- the account ---------------------------------------------------------------------------


async def test_safety_rows_go_with_the_account_and_the_counts_stay(
    app: httpx.AsyncClient, owner: asyncpg.Connection, user: User
) -> None:
    month = await owner.fetchval("select date_trunc('month', now() at time zone 'UTC')::date")
    count = (
        "select coalesce(sum(events), 0) from avatar_chat.safety_counts"
        " where month = $1 and action = 'crisis' and category = 'all'"
    )
    before = await owner.fetchval(count, month)
    chat = await create_chat(app, user)
    await owner.execute("insert into public.user_safety (user_id, minor) values ($1, false)", user.id)
    assert (await send(app, user, chat, "I want to kill myself")).status_code == 201
    assert await owner.fetchval(count, month) == before + 1
    assert (await app.delete("/me", headers=user.headers)).status_code == 204
    for table in ("avatar_chat.safety_events", "avatar_chat.interactions", "public.user_safety"):
        assert await owner.fetchval(f"select count(*) from {table} where user_id = $1", user.id) == 0, table
    assert await owner.fetchval(count, month) == before + 1


# --- edits ------------------------------------------------------------------------------------


async def test_edits_are_moderated_and_a_blocked_message_can_be_edited_into_a_sent_one(
    app: httpx.AsyncClient, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    fake.reply = "Of course."
    chat = await create_chat(app, user)
    blocked = await send(app, user, chat, "send me nudes")
    assert_error(blocked, 422, "message_blocked")
    message_id = blocked.json()["error"]["details"]["message_id"]
    url = f"/conversations/{chat}/messages/{message_id}"

    refused = await app.patch(url, json={"content": "I want to kill myself"}, headers=user.headers)
    assert_error(refused, 422, "message_blocked")
    assert refused.json()["error"]["details"]["crisis_notice"] == CRISIS
    german = {**user.headers, "Accept-Language": "de"}
    refused = await app.patch(url, json={"content": "I want to kill myself"}, headers=german)
    assert refused.json()["error"]["details"]["crisis_notice"] == CRISIS_DE
    assert (await history(app, user, chat))[-1]["content"] == "send me nudes"  # not applied
    assert [e["action"] for e in await events(owner, user)] == ["block", "crisis", "crisis"]

    edited = await app.patch(url, json={"content": "tell me a joke"}, headers=user.headers)
    assert edited.status_code == 201, edited.text
    assert shape(await history(app, user, chat))[-2:] == [
        ("user", None, "complete"),
        ("assistant", None, "complete"),
    ]
    assert fake.requests[-1]["messages"][-1]["content"].endswith("tell me a joke")


async def test_a_notice_is_followed_like_a_reply(
    app: httpx.AsyncClient, fake: FakeOpenAIServer, user: User
) -> None:
    fake.reply = "I hear you."
    chat = await create_chat(app, user)
    notice = (await send(app, user, chat, "I want to die")).json()["notices"][-1]
    headers = {**user.headers, "Accept": "text/event-stream"}
    followed = await app.get(f"/conversations/{chat}/messages/{notice['id']}/stream", headers=headers)
    assert followed.status_code == 200
    records = parse_sse(followed.text)
    assert [name for name, _ in records] == ["delta", "done"]
    assert records[0][1]["content"] == CRISIS and records[-1][1] == notice
