// The plan's usage as the page tells it (usage.js): counts in a few characters, when a
// quota resets in the user's own time, what the usage meter shows from GET /me/usage, and
// what a 429 quota_exceeded says.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  formatCount,
  meterLevel,
  meterView,
  quotaMessage,
  resetPhrase,
} from "../../../backend/avatar_chat/web/static/usage.js";

// 2026-12-07 18:30 UTC: 19:30 in Berlin, 03:30 on the 8th in Tokyo, 10:30 in Los Angeles.
const NOW = Date.parse("2026-12-07T18:30:00Z");
const UTC = { locale: "en-US", timeZone: "UTC", now: NOW };

/** Intl may put a narrow no-break space before AM/PM (newer ICU): compare plain spaces. */
const plain = (text) => text?.replace(/\s/g, " ");

/** GET /me/usage as the API documents it. */
function usageBody({ day = {}, month = {} } = {}) {
  return {
    plan: { name: "free", messages_per_day: 10, tokens_per_day: 20000, tokens_per_month: 300000 },
    plan_source: "default",
    time_zone: "UTC",
    day: {
      start: "2026-12-07T00:00:00Z",
      resets_at: "2026-12-08T00:00:00Z",
      messages: 3,
      tokens: 1234,
      messages_limit: 10,
      tokens_limit: 20000,
      ...day,
    },
    month: {
      start: "2026-12-01T00:00:00Z",
      resets_at: "2027-01-01T00:00:00Z",
      messages: 30,
      tokens: 12345,
      tokens_limit: 300000,
      ...month,
    },
    by_model: [],
  };
}

describe("formatCount", () => {
  test("small counts as they are", () => {
    assert.deepEqual([0, 3, 10, 999].map(formatCount), ["0", "3", "10", "999"]);
  });

  test("thousands and millions in a few characters, one decimal below 100", () => {
    assert.equal(formatCount(1234), "1.2k");
    assert.equal(formatCount(20000), "20k");
    assert.equal(formatCount(12345), "12.3k");
    assert.equal(formatCount(300000), "300k");
    assert.equal(formatCount(1_250_000), "1.2M");
    assert.equal(formatCount(2_000_000_000), "2G");
  });

  test("rounded down: what was used never shows as the limit before it is", () => {
    assert.equal(formatCount(19_999), "19.9k");
    assert.equal(formatCount(999_999), "999k");
    assert.equal(formatCount(1999), "1.9k");
  });

  test("nothing readable is 0", () => {
    for (const value of [null, undefined, -5, Number.NaN, "x"]) assert.equal(formatCount(value), "0");
  });
});

describe("resetPhrase", () => {
  test("later today, in the user's time zone", () => {
    assert.equal(plain(resetPhrase("2026-12-07T22:00:00Z", UTC)), "today at 10:00 PM");
    assert.equal(
      plain(resetPhrase("2026-12-08T00:00:00Z", { ...UTC, timeZone: "America/Los_Angeles" })),
      "today at 4:00 PM",
    );
  });

  test("tomorrow: UTC midnight is 1 AM in Berlin, and 9 AM the same day in Tokyo, where it is the 8th already", () => {
    assert.equal(plain(resetPhrase("2026-12-08T00:00:00Z", UTC)), "tomorrow at 12:00 AM");
    assert.equal(
      plain(resetPhrase("2026-12-08T00:00:00Z", { ...UTC, timeZone: "Europe/Berlin" })),
      "tomorrow at 1:00 AM",
    );
    assert.equal(
      plain(resetPhrase("2026-12-08T00:00:00Z", { ...UTC, timeZone: "Asia/Tokyo" })),
      "today at 9:00 AM",
    );
  });

  test("the user's locale writes the time", () => {
    assert.equal(
      plain(resetPhrase("2026-12-08T00:00:00Z", { locale: "en-GB", timeZone: "Europe/Berlin", now: NOW })),
      "tomorrow at 01:00",
    );
  });

  test("further away: the date and time", () => {
    assert.equal(plain(resetPhrase("2027-01-01T00:00:00Z", UTC)), "on Jan 1, 2027, 12:00 AM");
    assert.equal(
      plain(resetPhrase("2027-01-01T00:00:00Z", { locale: "de-DE", timeZone: "Europe/Berlin", now: NOW })),
      "on 01.01.2027, 01:00",
    );
  });

  test("tomorrow across a month's end", () => {
    const now = Date.parse("2026-12-31T12:00:00Z");
    assert.equal(plain(resetPhrase("2027-01-01T00:00:00Z", { ...UTC, now })), "tomorrow at 12:00 AM");
  });

  test("missing or unreadable: null", () => {
    for (const value of [null, undefined, "soon"]) assert.equal(resetPhrase(value, UTC), null);
  });
});

describe("meterLevel", () => {
  test("ok, high from 80 %, full at the limit (or over it, or with nothing allowed)", () => {
    assert.deepEqual(
      [
        [0, 10],
        [7, 10],
        [8, 10],
        [9, 10],
        [10, 10],
        [11, 10],
        [0, 0],
      ].map(([used, limit]) => meterLevel(used, limit)),
      ["ok", "ok", "high", "high", "full", "full", "full"],
    );
  });
});

describe("meterView", () => {
  test("one meter per limited quantity, by period", () => {
    const view = meterView(usageBody(), UTC);
    assert.deepEqual(
      view.periods.map((p) => [p.title, p.meters.map((m) => m.text)]),
      [
        ["Today", ["3 / 10 messages", "1.2k / 20k tokens"]],
        ["This month", ["12.3k / 300k tokens"]],
      ],
    );
    const [messages, tokens] = view.periods[0].meters;
    assert.deepEqual(
      { ...messages, valueText: plain(messages.valueText) },
      {
        id: "day-messages",
        label: "Messages today",
        text: "3 / 10 messages",
        valueText: "3 of 10 used, resets tomorrow at 12:00 AM",
        used: 3,
        limit: 10,
        share: 0.3,
        level: "ok",
      },
    );
    assert.equal(tokens.label, "Tokens today");
    assert.equal(plain(tokens.valueText), "1234 of 20000 used, resets tomorrow at 12:00 AM");
    const month = view.periods[1].meters[0];
    assert.equal(month.label, "Tokens this month");
    assert.equal(plain(month.valueText), "12345 of 300000 used, resets on Jan 1, 2027, 12:00 AM");
  });

  test("an unlimited quantity (null) is not shown; nothing limited: no meter at all", () => {
    const messagesOnly = meterView(usageBody({ day: { tokens_limit: null }, month: { tokens_limit: null } }), UTC);
    assert.deepEqual(
      messagesOnly.periods.map((p) => [p.period, p.meters.map((m) => m.id)]),
      [["day", ["day-messages"]]],
    );
    const monthOnly = meterView(usageBody({ day: { messages_limit: null, tokens_limit: null } }), UTC);
    assert.deepEqual(
      monthOnly.periods.map((p) => [p.title, p.meters.map((m) => m.text)]),
      [["This month", ["12.3k / 300k tokens"]]],
    );
    const unlimited = usageBody({
      day: { messages_limit: null, tokens_limit: null },
      month: { tokens_limit: null },
    });
    assert.equal(meterView(unlimited, UTC), null);
    assert.equal(meterView(null, UTC), null);
  });

  test("used up, and over the limit (a reply's tokens count once it is written): the bar stays full", () => {
    const view = meterView(usageBody({ day: { messages: 10, tokens: 20_480 } }), UTC);
    const [messages, tokens] = view.periods[0].meters;
    assert.deepEqual([messages.text, messages.share, messages.level], ["10 / 10 messages", 1, "full"]);
    assert.deepEqual([tokens.text, tokens.share, tokens.level], ["20.4k / 20k tokens", 1, "full"]);
  });

  test("a limit of 0 allows nothing: full from the start", () => {
    const view = meterView(usageBody({ day: { messages: 0, messages_limit: 0 } }), UTC);
    const messages = view.periods[0].meters[0];
    assert.deepEqual([messages.text, messages.share, messages.level], ["0 / 0 messages", 1, "full"]);
  });

  test("no reset time: the value alone", () => {
    const view = meterView(usageBody({ day: { resets_at: null } }), UTC);
    assert.equal(view.periods[0].meters[0].valueText, "3 of 10 used");
  });
});

describe("quotaMessage", () => {
  const details = {
    plan: "free",
    limit: "messages_per_day",
    allowed: 10,
    used: 10,
    resets_at: "2026-12-08T00:00:00Z",
  };

  test("which quota of which plan, and when it resets in the user's time", () => {
    assert.equal(
      plain(quotaMessage(details, { ...UTC, timeZone: "Europe/Berlin" })),
      "You have used today's 10 messages on the free plan. You can send again tomorrow at 1:00 AM.",
    );
    assert.equal(
      plain(quotaMessage({ ...details, limit: "tokens_per_day", allowed: 20000, used: 20480 }, UTC)),
      "You have used today's 20k tokens on the free plan. You can send again tomorrow at 12:00 AM.",
    );
    assert.equal(
      plain(
        quotaMessage(
          { ...details, limit: "tokens_per_month", allowed: 300000, resets_at: "2027-01-01T00:00:00Z" },
          UTC,
        ),
      ),
      "You have used this month's 300k tokens on the free plan. You can send again on Jan 1, 2027, 12:00 AM.",
    );
  });

  test("what is missing is left out", () => {
    assert.equal(
      quotaMessage({ limit: "messages_per_day", allowed: null, plan: null, resets_at: null }, UTC),
      "You have used today's messages on your plan.",
    );
  });

  test("no resets_at: Retry-After says when", () => {
    assert.equal(
      plain(quotaMessage({ ...details, resets_at: undefined }, { ...UTC, retryAfter: 3 * 3600 })),
      "You have used today's 10 messages on the free plan. You can send again today at 9:30 PM.",
    );
  });

  test("a quota this client does not know: the server's message, then the reset", () => {
    const message = "You have used this plan's images for today.";
    assert.equal(
      plain(quotaMessage({ ...details, limit: "images_per_day" }, { ...UTC, fallback: message })),
      `${message} You can send again tomorrow at 12:00 AM.`,
    );
    assert.equal(
      quotaMessage(null, { ...UTC, fallback: message, retryAfter: null }),
      message,
    );
  });
});
