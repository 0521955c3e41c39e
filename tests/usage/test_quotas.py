"""Plans and quotas (docs/usage.md): enforced in Postgres in the turn's own round trip, so
they hold across workers and machines; a plan edited in the dashboard holds from the next
request on, on every worker; windows follow the user's time zone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from avatar_chat.auth.tokens import mint_access_token
from tests.support.assertions import assert_error
from tests.support.factories import (
    TEST_JWT_SECRET,
    User,
    away_from_minute_boundary,
    create_avatar,
    create_conversation,
    history,
    send,
)
from tests.support.servers import ServerProcess, server_pair
from tests.usage.conftest import MakePlan, assign


def _quota(response: httpx.Response, limit: str) -> dict[str, Any]:
    """A 429 quota_exceeded for `limit`: its details, after checking Retry-After agrees."""
    assert_error(response, 429, "quota_exceeded")
    details: dict[str, Any] = response.json()["error"]["details"]
    assert details["limit"] == limit
    resets_at = datetime.fromisoformat(details["resets_at"])
    retry_after = int(response.headers["Retry-After"])
    # Retry-After counts the seconds until the window resets (the test's clock and the
    # database's agree to within a few seconds).
    until = (resets_at - datetime.now(resets_at.tzinfo)).total_seconds()
    assert abs(retry_after - until) < 5, (retry_after, until)
    return details


async def _usage(client: httpx.AsyncClient, user: User) -> dict[str, Any]:
    response = await client.get("/me/usage", headers=user.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.slow
async def test_fifty_concurrent_sends_against_a_quota_of_ten_admit_exactly_ten(
    database_url: str, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """Two servers of two workers each, 50 sends at once over five conversations: the
    user's counters row serialises the count, so exactly ten are admitted, whoever takes
    them; the others answer 429 and leave nothing behind."""
    plan = await make_plan(messages_per_day=10)
    await assign(owner, user, plan)
    a = ServerProcess(database_url=database_url, workers=2)
    b = ServerProcess(database_url=database_url, workers=2)
    try:
        await asyncio.gather(a.start(), b.start())
        async with a.client() as ca, b.client() as cb:
            await create_avatar(ca, user)
            chats = [(await create_conversation(ca, user))["id"] for _ in range(5)]
            answers = await asyncio.gather(
                *(send(ca if i % 2 else cb, user, chats[i % 5], f"message {i}") for i in range(50))
            )
            admitted = [r for r in answers if r.status_code == 201]
            refused = [r for r in answers if r.status_code != 201]
            assert len(admitted) == 10, [r.text for r in refused if r.status_code != 429]
            for response in refused:
                details = _quota(response, "messages_per_day")
                assert details == details | {"plan": plan, "allowed": 10, "used": 10}
            sent = [m for chat in chats for m in await history(ca, user, chat) if m["role"] == "user"]
            assert len(sent) == 10  # a refused send wrote nothing
            usage = await _usage(cb, user)
            assert usage["day"]["messages"] == 10 and usage["day"]["messages_limit"] == 10
            assert usage["plan"]["name"] == plan and usage["plan_source"] == "user_plans"
    finally:
        await asyncio.gather(a.__aexit__(None, None, None), b.__aexit__(None, None, None))


@pytest.mark.slow
async def test_a_plan_change_holds_at_once_on_every_worker(
    database_url: str, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """Plans are read in the transaction that admits a turn, never cached: an edit of the
    plan, a new plan for the user, the JWT's app_metadata.plan all hold from the next send,
    whichever server gets it."""
    plan = await make_plan(messages_per_day=1)
    await assign(owner, user, plan)
    async with server_pair(database_url, {}) as (a, b), a.client() as ca, b.client() as cb:
        chat = await create_conversation(ca, user) if await create_avatar(ca, user) else None
        assert chat is not None
        assert (await send(ca, user, chat["id"], "one")).status_code == 201
        _quota(await send(cb, user, chat["id"], "two"), "messages_per_day")

        await owner.execute("update public.plans set messages_per_day = 3 where name = $1", plan)
        assert (await send(cb, user, chat["id"], "two")).status_code == 201
        assert (await _usage(ca, user))["day"]["messages_limit"] == 3

        suspended = await make_plan(messages_per_day=0)
        await assign(owner, user, suspended)
        details = _quota(await send(ca, user, chat["id"], "three"), "messages_per_day")
        assert details["plan"] == suspended and details["allowed"] == 0

        # No plan of their own: the token's app_metadata.plan, when it names a plan...
        generous = await make_plan(messages_per_day=100)
        await owner.execute("delete from public.user_plans where user_id = $1", user.id)
        token = mint_access_token(
            TEST_JWT_SECRET, user_id=user.id, email=user.email, extra={"app_metadata": {"plan": generous}}
        )
        with_plan = User(user.id, user.email, token)
        assert (await send(cb, with_plan, chat["id"], "three")).status_code == 201
        usage = await _usage(ca, with_plan)
        assert (usage["plan"]["name"], usage["plan_source"]) == (generous, "token")
        # ...which the operator's row overrides, at once.
        await assign(owner, user, suspended)
        _quota(await send(ca, with_plan, chat["id"], "four"), "messages_per_day")
        # A token naming no plan (or none): the default plan, USAGE_DEFAULT_PLAN.
        await owner.execute("delete from public.user_plans where user_id = $1", user.id)
        usage = await _usage(cb, user)
        assert (usage["plan"]["name"], usage["plan_source"]) == ("free", "default")
        assert (await send(cb, user, chat["id"], "four")).status_code == 201


async def test_the_day_resets_at_midnight_in_the_users_time_zone(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """The window is the user's day (Asia/Tokyo here): the refusal says when it resets and
    Retry-After counts down to it; once the clock passes midnight (the stored window moved
    back a day, as the clock the test controls), the count starts again from zero."""
    plan = await make_plan(messages_per_day=2)
    await assign(owner, user, plan, "Asia/Tokyo")
    await create_avatar(app_client, user)
    chat = (await create_conversation(app_client, user))["id"]
    for text in ("one", "two"):
        assert (await send(app_client, user, chat, text)).status_code == 201
    details = _quota(await send(app_client, user, chat, "three"), "messages_per_day")
    midnight = await owner.fetchval(
        "select ((now() at time zone 'Asia/Tokyo')::date + 1)::timestamp at time zone 'Asia/Tokyo'"
    )
    assert datetime.fromisoformat(details["resets_at"]) == midnight
    usage = await _usage(app_client, user)
    assert usage["time_zone"] == "Asia/Tokyo"
    assert datetime.fromisoformat(usage["day"]["resets_at"]) == midnight
    assert (usage["day"]["messages"], usage["day"]["messages_limit"]) == (2, 2)

    await owner.execute("update avatar_chat.usage_counters set day = day - 1 where user_id = $1", user.id)
    assert (await _usage(app_client, user))["day"]["messages"] == 0  # a new day
    assert (await send(app_client, user, chat, "three")).status_code == 201
    usage = await _usage(app_client, user)
    assert usage["day"]["messages"] == 1
    assert usage["month"]["messages"] == 3  # the month goes on


async def test_token_quotas_per_day_and_month(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """A turn is refused once the day's (or month's) tokens reached the quota; the reply
    that crossed it was not cut. A new month starts from zero."""
    plan = await make_plan(tokens_per_day=1)
    await assign(owner, user, plan)
    await create_avatar(app_client, user)
    chat = (await create_conversation(app_client, user))["id"]
    first = await send(app_client, user, chat, "spend it all")
    assert first.status_code == 201
    assert first.json()["assistant_message"]["status"] == "complete"  # never cut for quota
    spent = (await _usage(app_client, user))["day"]["tokens"]
    assert spent > 1
    details = _quota(await send(app_client, user, chat, "more"), "tokens_per_day")
    assert (details["allowed"], details["used"]) == (1, spent)

    await owner.execute(
        "update public.plans set tokens_per_day = null, tokens_per_month = $2 where name = $1", plan, spent
    )
    details = _quota(await send(app_client, user, chat, "more"), "tokens_per_month")
    resets_at = datetime.fromisoformat(details["resets_at"])
    assert (resets_at.day, resets_at.hour, resets_at.minute) == (1, 0, 0)  # the 1st, at UTC midnight
    await owner.execute(
        "update avatar_chat.usage_counters set month = (month - interval '1 month')::date,"
        " day = day - 40 where user_id = $1",
        user.id,
    )
    assert (await send(app_client, user, chat, "a new month")).status_code == 201


async def test_a_plan_sets_the_sends_per_minute_and_the_streams(
    app_client: httpx.AsyncClient, owner: asyncpg.Connection, user: User, make_plan: MakePlan
) -> None:
    """The plan's sends_per_minute and max_concurrent_streams replace the deployment's."""
    plan = await make_plan(sends_per_minute=2)
    await assign(owner, user, plan)
    await create_avatar(app_client, user)
    chat = (await create_conversation(app_client, user))["id"]
    await away_from_minute_boundary()
    for text in ("one", "two"):
        assert (await send(app_client, user, chat, text)).status_code == 201
    assert_error(await send(app_client, user, chat, "three"), 429, "rate_limited")


async def test_bad_plan_data_is_refused_by_constraints(owner: asyncpg.Connection, user: User) -> None:
    """What an operator may type in the dashboard is checked by the table itself, with a
    constraint that names what is wrong; nothing is written."""
    bad_plans = {  # constraint: (column, value)
        "plans_name_format": ("name", "Not A Name!"),
        "plans_messages_per_day_nonnegative": ("messages_per_day", -1),
        "plans_tokens_per_day_nonnegative": ("tokens_per_day", -5),
        "plans_tokens_per_month_nonnegative": ("tokens_per_month", -5),
        "plans_max_reply_tokens_range": ("max_reply_tokens", 0),
        "plans_models_listed": ("models", []),
        "plans_max_concurrent_streams_nonnegative": ("max_concurrent_streams", -1),
        "plans_sends_per_minute_nonnegative": ("sends_per_minute", -1),
    }
    for constraint, (column, value) in bad_plans.items():
        name, extra = (value, None) if column == "name" else ("x1", value)
        columns = "name" if column == "name" else f"name, {column}"
        values = "$1" if column == "name" else "$1, $2"
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await owner.execute(
                f"insert into public.plans ({columns}) values ({values})",
                *([name] if extra is None else [name, extra]),
            )
        assert caught.value.constraint_name == constraint
    for models in ([""], ["gpt-4o", None]):
        with pytest.raises(asyncpg.CheckViolationError):
            await owner.execute("insert into public.plans (name, models) values ('x8', $1::text[])", models)
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await owner.execute(
            "insert into public.user_plans (user_id, time_zone) values ($1, 'Mars/Olympus_Mons')", user.id
        )
    assert caught.value.constraint_name == "user_plans_time_zone_known"
    assert "Unknown time zone" in caught.value.message
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await owner.execute(
            "insert into public.user_plans (user_id, plan) values ($1, 'no-such-plan')", user.id
        )
    # The default plan, or one a user is on, cannot be deleted from under them.
    await owner.execute("select avatar_chat.configure_default_plan('free')")  # what every worker does
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await owner.execute("delete from public.plans where name = 'free'")
    name = f"t-{uuid.uuid4().hex[:8]}"
    await owner.execute("insert into public.plans (name) values ($1)", name)
    await owner.execute("insert into public.user_plans (user_id, plan) values ($1, $2)", user.id, name)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await owner.execute("delete from public.plans where name = $1", name)
    await owner.execute(
        "update public.plans set name = $2 where name = $1", name, name + "-r"
    )  # renames follow
    assert (
        await owner.fetchval("select plan from public.user_plans where user_id = $1", user.id) == name + "-r"
    )
    await owner.execute("delete from public.user_plans where user_id = $1", user.id)
    await owner.execute("delete from public.plans where name = $1", name + "-r")
    assert await owner.fetchval("select count(*) from public.plans where name like 'x_'") == 0


@pytest.mark.slow
async def test_the_default_plan_comes_from_the_settings(
    database_url: str, owner: asyncpg.Connection, user: User
) -> None:
    """USAGE_DEFAULT_PLAN names the plan of users who have none; it is created (without
    limits) when missing, and the operator's limits on it then hold."""
    name = f"d-{uuid.uuid4().hex[:8]}"
    try:
        env = {"USAGE_DEFAULT_PLAN": name}
        async with ServerProcess(database_url=database_url, env=env) as server, server.client() as client:
            usage = await _usage(client, user)
            assert usage["plan"] == {
                "name": name,
                "messages_per_day": None,
                "tokens_per_day": None,
                "tokens_per_month": None,
                "max_reply_tokens": None,
                "models": None,
                "max_concurrent_streams": None,
                "sends_per_minute": None,
            }
            await owner.execute("update public.plans set messages_per_day = 0 where name = $1", name)
            await create_avatar(client, user)
            chat = (await create_conversation(client, user))["id"]
            _quota(await send(client, user, chat, "hello"), "messages_per_day")
    finally:
        await owner.execute("select avatar_chat.configure_default_plan('free')")
        await owner.execute("delete from public.plans where name = $1", name)
