"""The yearly safety report (`avatar-chat safety-report --year N`): the crisis referral
notices issued in a calendar year, in total, by month and by category, and the safety
protocol this configuration runs (what California's SB 243 and New York's GBL article 47
ask an operator of a companion chatbot to report).

The counts come from avatar_chat.safety_report(year), which reads the anonymous monthly
counts (avatar_chat.safety_counts): they outlive deleted accounts and hold no user
identifier, so nothing in this report names a user, a conversation or a message, and no
text a user wrote. The only texts in it are the operator's own notices.

The protocol is the one the settings of the process running the command describe: run it
with the server's configuration.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from avatar_chat.chat.moderation import MINOR_ACTIONS, Action, SafetyPolicy
from avatar_chat.core.settings import CrisisMode, FailMode, ModerationProviderName, OutputMode, Settings
from avatar_chat.safety import llama_guard, openai_moderation

ALL: Final = "all"  # the category under which safety_report counts the notices themselves

_PROVIDERS: Final = {
    ModerationProviderName.offline: "built-in rules for self-harm and sexual content, no network",
    ModerationProviderName.openai: "an OpenAI-compatible /moderations API",
    ModerationProviderName.llama_guard: "a Llama Guard model behind an OpenAI-compatible chat API",
    ModerationProviderName.none: "none: messages and replies are not checked; no crisis notice is issued",
}
_FAIL_MODES: Final = {
    FailMode.closed: "closed: while the provider is unavailable messages are refused (503), never unchecked",
    FailMode.open: "open: while the provider is unavailable messages go on unchecked, each one recorded",
}
_CRISIS_MODES: Final = {
    CrisisMode.precede: "precede: the crisis notice comes first, then the avatar's reply",
    CrisisMode.instead: "replace: the crisis notice is shown instead of the avatar's reply",
}
_OUTPUT_MODES: Final = {
    OutputMode.stream: "stream: text goes out as it comes; a flagged reply is withdrawn and replaced",
    OutputMode.hold: "hold: only text already checked goes out",
}


@dataclass(frozen=True, slots=True)
class Month:
    month: dt.date  # its first day
    notices: int
    by_category: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class SafetyReport:
    year: int
    generated_at: dt.datetime
    notices: int
    by_category: Mapping[str, int]
    months: Sequence[Month]  # all twelve, those with no notice too
    protocol: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "period": {
                "from": dt.date(self.year, 1, 1).isoformat(),
                "to": dt.date(self.year, 12, 31).isoformat(),
                "time_zone": "UTC",
            },
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "crisis_referral_notices": {
                "total": self.notices,
                "by_category": dict(self.by_category),
                "by_month": [
                    {
                        "month": m.month.strftime("%Y-%m"),
                        "total": m.notices,
                        "by_category": dict(m.by_category),
                    }
                    for m in self.months
                ],
            },
            "protocol": dict(self.protocol),
        }


async def fetch_counts(conn: asyncpg.Connection, year: int) -> list[tuple[dt.date, str, int]]:
    """avatar_chat.safety_report(year): (month, category, notices), category 'all' included."""
    rows = await conn.fetch("select month, category, notices from avatar_chat.safety_report($1)", year)
    return [(row["month"], row["category"], row["notices"]) for row in rows]


def build_report(
    year: int,
    counts: Sequence[tuple[dt.date, str, int]],
    protocol: Mapping[str, Any],
    *,
    now: dt.datetime | None = None,
) -> SafetyReport:
    by_month: dict[int, dict[str, int]] = {number: {} for number in range(1, 13)}
    for month, category, notices in counts:
        if month.year == year:
            by_month[month.month][category] = by_month[month.month].get(category, 0) + notices
    months = [
        Month(
            month=dt.date(year, number, 1),
            notices=found.get(ALL, 0),
            by_category=_sorted({k: v for k, v in found.items() if k != ALL}),
        )
        for number, found in by_month.items()
    ]
    by_category: dict[str, int] = {}
    for m in months:
        for category, notices in m.by_category.items():
            by_category[category] = by_category.get(category, 0) + notices
    return SafetyReport(
        year=year,
        generated_at=now or dt.datetime.now(dt.UTC),
        notices=sum(m.notices for m in months),
        by_category=_sorted(by_category),
        months=months,
        protocol=protocol,
    )


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    """Most first, then by name."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def protocol(settings: Settings) -> dict[str, Any]:
    """The safety protocol these settings run: moderation, the actions by category, the
    notices and their cadence (texts are the operator's own)."""
    policy = SafetyPolicy.from_settings(settings)
    provider = settings.moderation_provider
    enforced = {category: str(action) for category, action in sorted(policy.actions.items())}
    minors = {
        category: str(policy.action(category, minor=True))
        for category in sorted({*policy.actions, *MINOR_ACTIONS})
        if policy.action(category, minor=True) != Action.allow
    }
    return {
        "moderation": {
            "provider": str(provider),
            "model": _model(settings),
            "means": _PROVIDERS[provider],
            "checked": provider != ModerationProviderName.none,
            "fail_mode": str(policy.fail_mode),
            "fail_mode_means": _FAIL_MODES[policy.fail_mode],
        },
        # Every category whose action is not allow (the rest are the model's to answer).
        "actions": {category: action for category, action in enforced.items() if action != Action.allow},
        # For a minor the stricter of these and MINOR_ACTIONS, in both directions.
        "minor_actions": minors,
        "minor_rule": f"{', '.join(sorted(MINOR_ACTIONS))}: blocked in both directions (the user's"
        " messages and the replies) whatever the actions above; minors also get the break reminder",
        "replies": {
            "check_every_chars": policy.output_check_chars,
            "mode": str(policy.output_mode),
            "mode_means": _OUTPUT_MODES[policy.output_mode],
            "refused": "a reply flagged for a category whose action is block or crisis is stopped and"
            " replaced by the filtered text",
            "filtered_text": policy.filtered_text,
        },
        "crisis": {
            "mode": str(policy.crisis_mode),
            "mode_means": _CRISIS_MODES[policy.crisis_mode],
            "notice": policy.crisis_notice,
            # By language tag, picked by the client's Accept-Language; else the notice above.
            "notices_by_language": dict(sorted(settings.safety_crisis_notices.items())),
        },
        "disclosure": {
            "notice": policy.disclosure,  # None: off
            "when": "at the start of every conversation and of every interaction (after"
            f" {_minutes(settings.safety_interaction_gap_minutes)} without a message), and again"
            f" every {_minutes(settings.safety_reminder_interval_minutes)} of it",
            "safety_reminder_interval_minutes": settings.safety_reminder_interval_minutes,
            "safety_interaction_gap_minutes": settings.safety_interaction_gap_minutes,
        },
        "suitability": {
            "notice": settings.safety_suitability_notice or None,  # None: off
            "where": "shown by the bundled web client (/app/config.json); other clients show it themselves",
        },
        "break_reminder": {
            "notice": policy.break_notice,  # None: off
            "when": "minors only: every"
            f" {_minutes(settings.safety_reminder_interval_minutes)} of continuing interaction",
        },
    }


def _model(settings: Settings) -> str | None:
    provider = settings.moderation_provider
    if provider == ModerationProviderName.openai:
        return settings.moderation_model or openai_moderation.DEFAULT_MODEL
    if provider == ModerationProviderName.llama_guard:
        return settings.moderation_model or llama_guard.DEFAULT_MODEL
    return None


def _minutes(value: float) -> str:
    return f"{value:g} minutes" if value != 1 else "1 minute"


def render_json(report: SafetyReport) -> str:
    return json.dumps(report.as_json(), indent=2, ensure_ascii=False)


def render_text(report: SafetyReport) -> str:
    p = report.protocol
    moderation, crisis, replies = p["moderation"], p["crisis"], p["replies"]
    disclosure, reminder, suitability = p["disclosure"], p["break_reminder"], p["suitability"]
    width = max((len(name) for name in report.by_category), default=0)
    lines = [
        f"Safety report {report.year}: crisis referral notices and the safety protocol",
        f"Period: {report.year}-01-01 to {report.year}-12-31 (UTC);"
        f" generated {report.generated_at.isoformat(timespec='seconds')}",
        "",
        f"Crisis referral notices issued: {report.notices}",
        "",
        "By category (a notice counts under every category its message was flagged for):",
        *([f"  {name:<{width}}  {count:>8}" for name, count in report.by_category.items()] or ["  (none)"]),
        "",
        "By month:",
    ]
    for m in report.months:
        detail = ", ".join(f"{name} {count}" for name, count in m.by_category.items())
        lines.append(f"  {m.month:%Y-%m}  {m.notices:>8}" + (f"  ({detail})" if detail else ""))
    model = f", model {moderation['model']}" if moderation["model"] else ""
    lines += [
        "",
        "Protocol in force (the configuration this command runs with):",
        f"  Moderation: {moderation['provider']}{model} ({moderation['means']})",
        f"  Fail mode: {moderation['fail_mode_means']}",
        "  Actions by category (every other category: allow):",
        *[f"    {category:<24} {action}" for category, action in p["actions"].items()],
        f"  Minors: {p['minor_rule']}",
        f"  Replies: checked every {replies['check_every_chars']} characters as they stream and whole at"
        f" the end ({replies['mode_means']}); {replies['refused']}: {_quoted(replies['filtered_text'])}",
        f"  Crisis referral: {crisis['mode_means']}",
        f"    Crisis notice: {_quoted(crisis['notice'])}",
        *[
            f"    Crisis notice ({tag}): {_quoted(text)}"
            for tag, text in crisis["notices_by_language"].items()
        ],
        "  AI disclosure: "
        + (f"{_quoted(disclosure['notice'])}, {disclosure['when']}" if disclosure["notice"] else "off"),
        "  Break reminder: "
        + (f"{_quoted(reminder['notice'])}, {reminder['when']}" if reminder["notice"] else "off"),
        "  Suitability notice: "
        + (f"{_quoted(suitability['notice'])}, {suitability['where']}" if suitability["notice"] else "off"),
    ]
    return "\n".join(lines)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
