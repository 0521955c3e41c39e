// The reducer that reads a reply's server-sent events (stream.js), without a browser.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { reduceStream, startStream } from "../../../backend/avatar_chat/web/static/stream.js";

const USER = { id: "u1", role: "user", seq: 1, content: "Hello", status: "complete" };
const REPLY = { id: "a1", role: "assistant", seq: 2, reply_to: "u1", content: "", status: "streaming" };

/** The state after each of `events` in turn, as chat.js runs it. */
function run(state, events) {
  return events.reduce((s, event) => reduceStream(s, { id: null, ...event }), state);
}

const types = (s) => s.effects.map((e) => e.type);

describe("a send streamed to its end", () => {
  const events = [
    { event: "user_message", data: USER, id: "1" },
    { event: "assistant_message", data: REPLY, id: "2" },
    { event: "delta", data: { content: "Hi" }, id: "3" },
    { event: "delta", data: { content: " there" }, id: "4" },
  ];

  test("shows the message, then the reply as its text arrives", () => {
    const s = run(startStream([]), events);
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.content, m.status]),
      [
        ["u1", "Hello", "complete"],
        ["a1", "Hi there", "streaming"],
      ],
    );
    assert.equal(s.reply.id, "a1");
    assert.equal(s.outcome, null);
  });

  test("lists what the page does about each event", () => {
    let s = startStream([]);
    s = reduceStream(s, events[0]);
    assert.deepEqual(s.effects, [
      { type: "render", id: "u1" },
      { type: "user_message", id: "u1" },
    ]);
    s = reduceStream(s, events[1]);
    assert.deepEqual(types(s), ["render", "replying"]);
    s = reduceStream(s, events[2]);
    assert.deepEqual(s.effects, [
      { type: "render", id: "a1" },
      { type: "save_progress", id: "a1", text: "Hi", lastEventId: "3" },
      { type: "scroll" },
    ]);
  });

  test("done replaces the reply with the saved one and ends the stream", () => {
    const done = { ...REPLY, content: "Hi there", status: "complete", personality: "witty", persona_version: 2 };
    const s = run(startStream([]), [...events, { event: "done", data: done, id: "5" }]);
    assert.deepEqual(s.outcome, { type: "done", reply: done });
    assert.deepEqual(s.messages.at(-1), done);
    assert.deepEqual(s.effects, [
      { type: "render", id: "a1" },
      { type: "drop_progress", id: "a1" },
      { type: "replied", id: "a1" },
    ]);
  });

  test("leaves the state it was given as it was", () => {
    const before = startStream([USER]);
    const frozen = structuredClone(before);
    run(before, events);
    assert.deepEqual(before, frozen);
  });
});

describe("event ids", () => {
  test("the last id seen is kept, and an event without one keeps the one before", () => {
    let s = startStream([USER, REPLY], { replyId: "a1", lastEventId: "7" });
    assert.equal(s.lastEventId, "7");
    s = reduceStream(s, { event: "delta", data: { content: "a" }, id: "8" });
    assert.equal(s.lastEventId, "8");
    s = reduceStream(s, { event: "delta", data: { content: "b" }, id: null });
    assert.equal(s.lastEventId, "8");
    assert.deepEqual(s.effects[1], { type: "save_progress", id: "a1", text: "ab", lastEventId: "8" });
  });

  test("an event this client does not know moves the id and nothing else", () => {
    const before = startStream([USER, REPLY], { replyId: "a1" });
    const s = reduceStream(before, { event: "ping", data: {}, id: "9" });
    assert.equal(s.lastEventId, "9");
    assert.equal(s.messages, before.messages);
    assert.deepEqual(s.effects, []);
  });
});

describe("following a reply (resume)", () => {
  test("continues the text kept from before the reload", () => {
    const kept = { ...REPLY, content: "Hi" };
    const s = run(startStream([USER, kept], { replyId: "a1", lastEventId: "3" }), [
      { event: "delta", data: { content: " again" }, id: "4" },
    ]);
    assert.equal(s.messages[1].content, "Hi again");
  });

  test("reset starts the text over", () => {
    const kept = { ...REPLY, content: "stale text" };
    const s = run(startStream([USER, kept], { replyId: "a1", lastEventId: "3" }), [
      { event: "reset", data: {}, id: "0" },
      { event: "delta", data: { content: "Fresh" }, id: "1" },
    ]);
    assert.equal(s.messages[1].content, "Fresh");
    assert.equal(s.lastEventId, "1");
  });

  test("reset before any reply is known changes nothing", () => {
    const s = reduceStream(startStream([USER]), { event: "reset", data: {}, id: null });
    assert.deepEqual(s.messages, [USER]);
    assert.deepEqual(s.effects, []);
  });
});

describe("a replayed send (the same Idempotency-Key)", () => {
  test("shows its text under a placeholder, never saved, until done names the reply", () => {
    let s = startStream([USER], { pendingId: "pending-x" });
    s = reduceStream(s, { event: "delta", data: { content: "Hi" }, id: "3" });
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.content]),
      [
        ["u1", "Hello"],
        ["pending-x", "Hi"],
      ],
    );
    assert.deepEqual(types(s), ["render", "scroll"]);
    const done = { ...REPLY, content: "Hi", status: "complete" };
    s = reduceStream(s, { event: "done", data: done, id: "4" });
    assert.deepEqual(
      s.messages.map((m) => m.id),
      ["u1", "a1"],
    );
  });
});

describe("a regenerated reply", () => {
  test("replaces the reply it is another alternative of", () => {
    const old = { ...REPLY, content: "Old", status: "failed" };
    const fresh = { ...REPLY, id: "a2", seq: 3, is_current: true };
    const s = run(startStream([USER, old]), [
      { event: "assistant_message", data: fresh, id: "1" },
      { event: "delta", data: { content: "New" }, id: "2" },
    ]);
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.content]),
      [
        ["u1", "Hello"],
        ["a2", "New"],
      ],
    );
  });
});

describe("error", () => {
  test("marks the reply with the status and code it names, and ends the stream", () => {
    const error = { code: "provider_error", message: "The model failed.", details: { status: "interrupted" } };
    const s = run(startStream([]), [
      { event: "user_message", data: USER, id: "1" },
      { event: "assistant_message", data: REPLY, id: "2" },
      { event: "delta", data: { content: "Hi" }, id: "3" },
      { event: "error", data: error, id: "4" },
    ]);
    assert.deepEqual(s.messages[1], { ...REPLY, content: "Hi", status: "interrupted", error_code: "provider_error" });
    assert.equal(s.outcome.type, "error");
    assert.equal(s.outcome.error, error);
    // Retry gets the reply as it was before the error.
    assert.equal(s.outcome.failed.status, "streaming");
    assert.deepEqual(types(s), ["render", "drop_progress"]);
  });

  test("names the reply by details.assistant_message_id; failed when no status is given", () => {
    const named = reduceStream(startStream([USER, REPLY]), {
      event: "error",
      data: { code: "turn_deadline", message: "Too long.", details: { assistant_message_id: "a1" } },
    });
    assert.equal(named.messages[1].status, "failed");
    assert.equal(named.outcome.failed.id, "a1");
  });

  test("before any reply: nothing to mark, nothing to retry", () => {
    const s = reduceStream(startStream([USER]), {
      event: "error",
      data: { code: "avatar_required", message: "Create an avatar first." },
    });
    assert.deepEqual(s.messages, [USER]);
    assert.deepEqual(s.outcome, { type: "error", error: s.outcome.error, failed: null });
    assert.deepEqual(s.effects, []);
  });
});
