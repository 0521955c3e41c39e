// When the client tries again and how long it waits (retry.js): Retry-After, the automatic
// retries of 503 (moderation_unavailable too) and 409 send_in_progress, following a cut
// reply, a 429's countdown, and whether Retry resends or regenerates.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  automaticRetrySeconds,
  countdownSeconds,
  countdownView,
  parseRetryAfter,
  resumeBackoffMs,
  retriesByItself,
  retryPlan,
} from "../../../backend/avatar_chat/web/static/retry.js";

const NOW = Date.parse("2026-12-07T06:00:00Z");

describe("parseRetryAfter", () => {
  test("delay-seconds", () => {
    assert.equal(parseRetryAfter("7", NOW), 7);
    assert.equal(parseRetryAfter("0", NOW), 0);
    assert.equal(parseRetryAfter("-3", NOW), 0);
  });

  test("an HTTP date: the seconds until then, rounded up, never below 0", () => {
    assert.equal(parseRetryAfter("Mon, 07 Dec 2026 06:00:30 GMT", NOW), 30);
    assert.equal(parseRetryAfter(new Date(NOW + 1500).toUTCString(), NOW + 500), 1);
    assert.equal(parseRetryAfter("Mon, 07 Dec 2026 05:59:00 GMT", NOW), 0);
  });

  test("absent or unreadable: null", () => {
    assert.equal(parseRetryAfter(null, NOW), null);
    assert.equal(parseRetryAfter(undefined, NOW), null);
    assert.equal(parseRetryAfter("soon", NOW), null);
  });
});

describe("automatic retries", () => {
  const unavailable = { status: 503, code: "database_unavailable", retryAfter: null };

  test("503 and 409 send_in_progress are retried by themselves, nothing else", () => {
    assert.ok(retriesByItself(unavailable));
    assert.ok(retriesByItself({ status: 409, code: "send_in_progress" }));
    for (const err of [
      { status: 409, code: "conflict" },
      { status: 429, code: "rate_limited" },
      { status: 500, code: "internal_error" },
      { status: 0, code: "network_error" },
    ]) {
      assert.ok(!retriesByItself(err), JSON.stringify(err));
      assert.equal(automaticRetrySeconds(err, 1), null);
    }
  });

  test("back off 1, 2, 4, 8 s, then give up", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((attempt) => automaticRetrySeconds(unavailable, attempt)),
      [1, 2, 4, 8, null],
    );
  });

  test("503 moderation_unavailable (the provider is down, nothing was sent) is retried like any 503", () => {
    const err = { status: 503, code: "moderation_unavailable", retryAfter: 2 };
    assert.ok(retriesByItself(err));
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((attempt) => automaticRetrySeconds(err, attempt)),
      [2, 2, 4, 8, null],
    );
    // A message moderation refused is not: sending it again is refused again.
    assert.ok(!retriesByItself({ status: 422, code: "message_blocked" }));
  });

  test("Retry-After when it is longer than the backoff", () => {
    const err = { ...unavailable, retryAfter: 3 };
    assert.deepEqual(
      [1, 2, 3, 4].map((attempt) => automaticRetrySeconds(err, attempt)),
      [3, 3, 4, 8],
    );
  });
});

describe("following a cut reply", () => {
  test("waits 1, 2, 3, 4 s between attempts, then offers Retry", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map(resumeBackoffMs),
      [1000, 2000, 3000, 4000, null],
    );
  });
});

describe("a 429's countdown", () => {
  test("waits Retry-After, at least 1 s, 5 s when it is missing", () => {
    assert.equal(countdownSeconds(12), 12);
    assert.equal(countdownSeconds(0), 1);
    assert.equal(countdownSeconds(null), 5);
    assert.equal(countdownSeconds(undefined), 5);
  });

  test("counts down with Send held back, then says try again now", () => {
    let left = countdownSeconds(2);
    const seen = [countdownView("rate_limited", left)];
    while (left > 0) seen.push(countdownView("rate_limited", --left));
    assert.deepEqual(seen, [
      { text: "You are sending too fast. You can try again in 2 s.", held: true },
      { text: "You are sending too fast. You can try again in 1 s.", held: true },
      { text: "You are sending too fast. You can try again now.", held: false },
    ]);
  });

  test("says why: too many replies at once", () => {
    assert.equal(
      countdownView("too_many_streams", 3).text,
      "Too many replies are being written at once. You can try again in 3 s.",
    );
  });
});

describe("retryPlan", () => {
  const lastSend = { conversationId: "c1", content: "Hello", key: "k1", userMessageId: "u1" };
  const reply = { id: "a1", role: "assistant", reply_to: "u1", status: "failed" };

  test("the same send again when this page sent the message the reply answers", () => {
    assert.equal(retryPlan(lastSend, "c1", reply), "resend");
    assert.equal(retryPlan(lastSend, "c1", { ...reply, status: "interrupted" }), "resend");
  });

  test("regenerate otherwise: a stopped reply, another conversation, another message, nothing sent here", () => {
    assert.equal(retryPlan(lastSend, "c1", { ...reply, status: "stopped" }), "regenerate");
    assert.equal(retryPlan(lastSend, "c2", reply), "regenerate");
    assert.equal(retryPlan(lastSend, "c1", { ...reply, reply_to: "u0" }), "regenerate");
    assert.equal(retryPlan({ ...lastSend, userMessageId: null }, "c1", reply), "regenerate");
    assert.equal(retryPlan(null, "c1", reply), "regenerate");
  });
});
