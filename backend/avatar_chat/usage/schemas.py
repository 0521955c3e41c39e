"""GET /me/usage, as the API answers it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class PlanRead(BaseModel):
    """A plan's limits; null: no limit (for the streams and sends per minute: the
    deployment's MAX_CONCURRENT_STREAMS and RATE_LIMIT_SENDS_PER_MINUTE)."""

    name: str
    messages_per_day: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    max_reply_tokens: int | None
    models: list[str] | None
    max_concurrent_streams: int | None
    sends_per_minute: int | None


class DayUsage(BaseModel):
    start: datetime = Field(description="When today began in the user's time zone.")
    resets_at: datetime = Field(description="When the daily quotas start again from zero.")
    messages: int = Field(description="Model calls asked for today (sends, regenerations, edits, retries).")
    tokens: int = Field(description="Tokens of replies and summaries today.")
    messages_limit: int | None
    tokens_limit: int | None


class MonthUsage(BaseModel):
    start: datetime
    resets_at: datetime
    messages: int
    tokens: int
    tokens_limit: int | None


class CallTotals(BaseModel):
    calls: int
    prompt_tokens: int
    completion_tokens: int


class ModelUsage(BaseModel):
    model: str
    kind: Literal["reply", "summary", "moderation"]
    day: CallTotals
    month: CallTotals


class UsageRead(BaseModel):
    plan: PlanRead | None = Field(description="The user's plan; null when no plan applies (no quota).")
    plan_source: Literal["user_plans", "token", "default"] | None = Field(
        description="Where the plan comes from: the operator's user_plans row, the token's "
        "app_metadata.plan, or USAGE_DEFAULT_PLAN."
    )
    time_zone: str = Field(description="The time zone whose days and months the windows follow.")
    day: DayUsage
    month: MonthUsage
    by_model: list[ModelUsage] = Field(
        description="This day's and month's calls and tokens per model and kind."
    )
