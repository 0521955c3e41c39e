"""What every model call cost, recorded (docs/usage.md): a reply's tokens as the provider
reported them (`stream_options.include_usage`) or estimated when it did not; stopped,
failed and filtered replies too; summaries and moderation calls, marked as such; the
Prometheus counters, GET /me/usage and the operator's views.

The LLM is the fake OpenAI-compatible server (real HTTP: the SDK's own transport cannot be
reached by respx); the remote moderation provider is faked with respx."""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import respx
from pydantic import SecretStr

from avatar_chat.core.settings import Settings
from tests.fakes.moderation_answers import moderation_body
from tests.fakes.openai_server import FakeOpenAIServer, reply_text
from tests.support.apps import own_app
from tests.support.factories import User, create_chat, history, send
from tests.support.fake_llm import serve_fake_llm
from tests.support.metrics import metric, metric_samples
from tests.usage.conftest import MakePlan, assign

MODERATION_URL = "https://moderation.test/v1"


# A server of this module's own (`fake`, tests/conftest.py's, resets it for each test).
fake_llm = pytest.fixture(scope="module")(serve_fake_llm)


@asynccontextmanager
async def worker(
    settings: Settings, fake: FakeOpenAIServer, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "llm_base_url": fake.base_url,
            "llm_api_key": SecretStr("test-key"),
            "llm_max_retries": 0,
            **overrides,
        }
    )
    async with own_app(configured) as (client, _):
        yield client


async def records(owner: asyncpg.Connection, user: User) -> list[dict[str, Any]]:
    rows = await owner.fetch(
        "select kind, model, plan, calls, prompt_tokens, completion_tokens, source, status, message_id"
        " from public.usage_records where user_id = $1 order by id",
        user.id,
    )
    return [dict(row) for row in rows]


def estimate(chars: int) -> int:
    return math.ceil(chars / 4)


def prompt_chars(request: dict[str, Any]) -> int:
    return sum(len(m["content"]) for m in request["messages"])


async def test_a_reply_records_the_tokens_the_provider_reported(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    plan = await make_plan()
    await assign(owner, user, plan)
    async with worker(settings, fake) as app:
        chat = await create_chat(app, user)
        before = metric_samples((await app.get("/metrics")).text)
        answer = await send(app, user, chat, "hello there, how are you")
        assert answer.status_code == 201, answer.text
        sent = fake.requests[-1]
        assert sent["stream_options"] == {"include_usage": True}
        [record] = await records(owner, user)
        # The fake reports one prompt token per four characters of the JSON messages and
        # one completion token per word (tests/fakes/openai_server.py).
        words = len(reply_text("hello there, how are you").split())
        assert record == {
            "kind": "reply",
            "model": settings.llm_model,
            "plan": plan,
            "calls": 1,
            "prompt_tokens": max(1, sum(len(str(m)) for m in sent["messages"]) // 4),
            "completion_tokens": words,
            "source": "provider",
            "status": "complete",
            "message_id": answer.json()["assistant_message"]["id"],
        } | {"message_id": record["message_id"]}
        assert str(record["message_id"]) == answer.json()["assistant_message"]["id"]
        after = metric_samples((await app.get("/metrics")).text)
        labels = {"model": settings.llm_model, "kind": "reply"}
        for kind, expected in (("prompt", record["prompt_tokens"]), ("completion", words)):
            grown = (metric(after, "avatar_chat_llm_tokens_total", **labels, type=kind) or 0) - (
                metric(before, "avatar_chat_llm_tokens_total", **labels, type=kind) or 0
            )
            assert grown == expected
        usage = (await app.get("/me/usage", headers=user.headers)).json()
        assert usage["day"]["tokens"] == record["prompt_tokens"] + words
        assert usage["day"]["messages"] == 1
        assert usage["by_model"] == [
            {
                "model": settings.llm_model,
                "kind": "reply",
                "day": {"calls": 1, "prompt_tokens": record["prompt_tokens"], "completion_tokens": words},
                "month": {"calls": 1, "prompt_tokens": record["prompt_tokens"], "completion_tokens": words},
            }
        ]


async def test_without_a_usage_chunk_the_reply_is_estimated(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    """A server that sends no usage chunk (here: not asked for one): four characters a token,
    of what was sent and of what came back."""
    async with worker(settings, fake, llm_stream_usage=False) as app:
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, "estimate me")
        assert answer.status_code == 201
        assert "stream_options" not in fake.requests[-1]
        [record] = await records(owner, user)
        reply = answer.json()["assistant_message"]["content"]
        assert (record["source"], record["status"]) == ("estimate", "complete")
        assert record["prompt_tokens"] == estimate(prompt_chars(fake.requests[-1]))
        assert record["completion_tokens"] == estimate(len(reply))


async def test_a_stream_cut_before_its_usage_chunk_records_what_came(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    async with worker(settings, fake) as app:
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, "[[fake:break]] cut me off")
        assert answer.status_code == 502
        reply = (await history(app, user, chat))[-1]
        assert reply["status"] == "failed"
        [record] = await records(owner, user)
        assert (record["kind"], record["source"], record["status"]) == ("reply", "estimate", "failed")
        received = "".join(
            re.findall(r"\S+\s*", reply_text("[[fake:break]] cut me off"))[:2]
        )  # two chunks came
        assert record["completion_tokens"] == estimate(len(received))
        assert record["prompt_tokens"] == estimate(prompt_chars(fake.requests[-1]))
        # A provider that answered nothing at all spent nothing we can know of.
        assert (await send(app, user, chat, "[[fake:status_500]] no")).status_code == 502
        assert len(await records(owner, user)) == 1


async def test_a_stopped_reply_records_its_spend(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    fake.default_scenario = "slow"
    fake.slow_delay_s = 0.05
    fake.reply = "word " * 100
    async with worker(settings, fake) as app:
        chat = await create_chat(app, user)
        sending = asyncio.create_task(send(app, user, chat, "go on"))
        reply_id = None
        while reply_id is None:
            await asyncio.sleep(0.05)
            reply_id = await owner.fetchval(
                "select id from public.messages where conversation_id = $1 and role = 'assistant'",
                uuid.UUID(chat),
            )
        await asyncio.sleep(0.5)  # some of it generated
        stopped = await app.post(f"/conversations/{chat}/messages/{reply_id}/stop", headers=user.headers)
        assert stopped.status_code == 200, stopped.text
        assert (await sending).status_code == 201
        for _ in range(50):
            if (got := await records(owner, user)) and got[0]["status"] == "stopped":
                break
            await asyncio.sleep(0.1)
        [record] = await records(owner, user)
        reply = (await history(app, user, chat))[-1]
        assert (reply["status"], record["status"], record["source"]) == ("stopped", "stopped", "estimate")
        assert record["completion_tokens"] >= estimate(len(reply["content"]))


async def test_a_filtered_reply_records_what_the_model_generated(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    fake.reply = "Once upon a time, a long calm story. " * 3 + "Now let's have sex. " + "More. " * 20
    async with worker(settings, fake, moderation_output_check_chars=40) as app:
        await owner.execute("insert into public.user_safety (user_id, minor) values ($1, true)", user.id)
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, "tell me a story")
        assert answer.status_code == 201, answer.text
        assert answer.json()["assistant_message"]["status"] == "filtered"
        [record] = await records(owner, user)
        # Cut at the check that flagged it, before the usage chunk: what came is estimated.
        assert (record["kind"], record["status"], record["source"]) == ("reply", "filtered", "estimate")
        assert record["completion_tokens"] >= estimate(fake.reply.index("Now let's"))


async def test_moderation_calls_are_recorded_apart(
    settings: Settings,
    fake: FakeOpenAIServer,
    owner: asyncpg.Connection,
    user: User,
    remote: respx.MockRouter,
) -> None:
    """A remote moderation provider's calls: one record for the message's check, one for
    the reply's (with how many calls), estimated (the moderation API reports no tokens);
    they do not count toward the user's token quota."""
    route = remote.post(f"{MODERATION_URL}/moderations").mock(
        return_value=httpx.Response(200, json=moderation_body())
    )
    fake.reply = "A calm reply that is long enough to be checked twice as it streams by."
    overrides = {
        "moderation_provider": "openai",
        "moderation_base_url": MODERATION_URL,
        "moderation_api_key": SecretStr("sk-x"),
        "moderation_output_check_chars": 40,
    }
    async with worker(settings, fake, **overrides) as app:
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, "check this message")
        assert answer.status_code == 201, answer.text
        got = await records(owner, user)
        moderation = [r for r in got if r["kind"] == "moderation"]
        assert [(r["model"], r["source"]) for r in moderation] == [("omni-moderation-latest", "estimate")] * 2
        message_check, reply_checks = moderation
        assert message_check["calls"] == 1
        assert message_check["prompt_tokens"] == estimate(len("check this message"))
        assert str(message_check["message_id"]) == answer.json()["user_message"]["id"]
        assert message_check["calls"] + reply_checks["calls"] == len(route.calls)
        [reply] = [r for r in got if r["kind"] == "reply"]
        usage = (await app.get("/me/usage", headers=user.headers)).json()
        assert usage["day"]["tokens"] == reply["prompt_tokens"] + reply["completion_tokens"]
        assert {(m["model"], m["kind"]) for m in usage["by_model"]} == {
            ("omni-moderation-latest", "moderation"),
            (settings.llm_model, "reply"),
        }


async def test_summaries_are_recorded_as_such(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User
) -> None:
    async with worker(settings, fake, chat_window_messages=2) as app:
        chat = await create_chat(app, user)
        for n in range(3):
            assert (await send(app, user, chat, f"message {n}")).status_code == 201
        for _ in range(50):
            if any(r["kind"] == "summary" for r in await records(owner, user)):
                break
            await asyncio.sleep(0.1)
        [summary] = [r for r in await records(owner, user) if r["kind"] == "summary"]
        assert (summary["model"], summary["source"], summary["message_id"]) == (
            settings.llm_model,
            "provider",
            None,
        )
        assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0


async def test_the_plan_picks_the_model_and_caps_the_reply(
    settings: Settings, fake: FakeOpenAIServer, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """A plan that does not list LLM_MODEL uses the first model it lists; its
    max_reply_tokens caps the reply (the lower of it and LLM_MAX_TOKENS)."""
    plan = await make_plan(models=["small-model", "other-model"], max_reply_tokens=3)
    await assign(owner, user, plan)
    async with worker(settings, fake) as app:
        chat = await create_chat(app, user)
        answer = await send(app, user, chat, "a long question for a short answer")
        assert answer.status_code == 201
        sent = fake.requests[-1]
        assert (sent["model"], sent["max_tokens"]) == ("small-model", 3)
        assert [(r["model"], r["completion_tokens"]) for r in await records(owner, user)] == [
            ("small-model", 3)
        ]
        await owner.execute(
            "update public.plans set models = $2 where name = $1", plan, ["x", settings.llm_model]
        )
        assert (await send(app, user, chat, "again")).status_code == 201
        assert fake.requests[-1]["model"] == settings.llm_model


async def test_the_operators_views(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    plan = await make_plan()
    await assign(owner, user, plan)
    chat = await create_chat(app_client, user)
    answer = await send(app_client, user, chat, "hello")
    assert answer.status_code == 201
    [record] = await records(owner, user)
    assert record["model"] == "offline" and record["source"] == "estimate"
    by_plan = await owner.fetchrow(
        "select calls, prompt_tokens, completion_tokens, users from avatar_chat.usage_by_plan"
        " where plan = $1 and day = (now() at time zone 'UTC')::date and kind = 'reply'",
        plan,
    )
    assert by_plan is not None
    assert dict(by_plan) == {
        "calls": 1,
        "prompt_tokens": record["prompt_tokens"],
        "completion_tokens": record["completion_tokens"],
        "users": 1,
    }
    assert (
        await owner.fetchval(
            "select calls from avatar_chat.usage_by_model where model = 'offline' and kind = 'reply'"
            " and day = (now() at time zone 'UTC')::date"
        )
        >= 1
    )
    assert (
        await owner.fetchval(
            "select users from avatar_chat.usage_by_day"
            " where kind = 'reply' and day = (now() at time zone 'UTC')::date"
        )
        >= 1
    )
