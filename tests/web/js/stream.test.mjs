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

// --- safety: notices, a withheld reply, a crisis notice instead of a reply ----------------

const notice = (id, seq, kind, content) => ({
  id,
  role: "notice",
  seq,
  content,
  status: "complete",
  notice_kind: kind,
  reply_to: null,
});
const findById = (s, id) => s.messages.find((m) => m.id === id);
const DISCLOSURE = notice("n1", 1, "disclosure", "You are chatting with an AI, not a person.");
const CRISIS = notice("n3", 3, "crisis", "Call or text 988.");

describe("notices", () => {
  test("are shown in seq order, between the message and the reply, and leave the reply streaming", () => {
    const user = { ...USER, seq: 2 };
    const reply = { ...REPLY, seq: 4 };
    const s = run(startStream([]), [
      { event: "user_message", data: user },
      { event: "notice", data: DISCLOSURE },
      { event: "notice", data: CRISIS },
      { event: "assistant_message", data: reply },
      { event: "delta", data: { content: "Hi" }, id: "1:2" },
    ]);
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.role, m.notice_kind ?? null]),
      [
        ["n1", "notice", "disclosure"],
        ["u1", "user", null],
        ["n3", "notice", "crisis"],
        ["a1", "assistant", null],
      ],
    );
    assert.equal(s.reply.id, "a1");
    assert.equal(s.outcome, null);
  });

  test("a notice is rendered and scrolled to, and is not taken for the reply", () => {
    const s = reduceStream(startStream([USER]), { event: "notice", data: CRISIS, id: null });
    assert.deepEqual(s.effects, [{ type: "render", id: "n3" }, { type: "scroll" }]);
    assert.equal(s.reply, null);
    assert.equal(findById(s, "n3").content, "Call or text 988.");
  });
});

describe("filtered: moderation withheld the reply", () => {
  const saved = {
    ...REPLY,
    content: "This reply was withheld because it did not meet our content guidelines.",
    status: "filtered",
  };

  test("what was shown is replaced by the saved text, and the stream ends", () => {
    const s = run(startStream([]), [
      { event: "user_message", data: USER },
      { event: "assistant_message", data: REPLY },
      { event: "delta", data: { content: "Something it should not say" }, id: "1:27" },
      { event: "filtered", data: saved },
    ]);
    assert.deepEqual(findById(s, "a1"), saved);
    assert.ok(!s.messages.some((m) => m.content.includes("should not")));
    assert.deepEqual(s.outcome, { type: "filtered", reply: saved });
    assert.deepEqual(s.effects, [
      { type: "render", id: "a1" },
      { type: "drop_progress", id: "a1" },
      { type: "filtered", id: "a1" },
    ]);
  });

  test("ends a followed reply (resume) the same way", () => {
    const kept = { ...REPLY, content: "Some" };
    const s = run(startStream([USER, kept], { replyId: "a1", lastEventId: "1:4" }), [
      { event: "delta", data: { content: " more" }, id: "1:9" },
      { event: "filtered", data: saved },
    ]);
    assert.equal(s.messages.length, 2);
    assert.equal(findById(s, "a1").status, "filtered");
    assert.equal(findById(s, "a1").content, saved.content);
    assert.equal(s.outcome.type, "filtered");
  });

  test("replaces a replayed send's placeholder", () => {
    const s = run(startStream([USER], { pendingId: "pending-x" }), [
      { event: "delta", data: { content: "Hi" }, id: "1:2" },
      { event: "filtered", data: saved },
    ]);
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.status]),
      [
        ["u1", "complete"],
        ["a1", "filtered"],
      ],
    );
  });

  test("ends a regenerated reply too, which replaces the one before", () => {
    const old = { ...REPLY, content: "Old", status: "failed" };
    const fresh = { ...REPLY, id: "a2", seq: 3, is_current: true };
    const s = run(startStream([USER, old]), [
      { event: "assistant_message", data: fresh },
      { event: "delta", data: { content: "New" }, id: "1:3" },
      { event: "filtered", data: { ...fresh, content: saved.content, status: "filtered" } },
    ]);
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.status]),
      [
        ["u1", "complete"],
        ["a2", "filtered"],
      ],
    );
  });
});

describe("done carrying a crisis notice (SAFETY_CRISIS_MODE=replace)", () => {
  test("ends the stream with the notice and no reply: nothing is left streaming", () => {
    const s = run(startStream([]), [
      { event: "user_message", data: USER },
      { event: "notice", data: { ...CRISIS, seq: 2 } },
      { event: "done", data: { ...CRISIS, seq: 2 } },
    ]);
    assert.deepEqual(
      s.messages.map((m) => [m.id, m.role, m.status]),
      [
        ["u1", "user", "complete"],
        ["n3", "notice", "complete"],
      ],
    );
    assert.deepEqual(s.outcome, { type: "notice", notice: { ...CRISIS, seq: 2 } });
    assert.equal(s.reply, null);
    assert.ok(!s.effects.some((e) => e.type === "replied" || e.type === "drop_progress"), s.effects);
  });

  test("a replayed send's placeholder, had one been shown, is dropped", () => {
    const s = run(startStream([USER], { pendingId: "pending-x" }), [
      { event: "delta", data: { content: "?" }, id: "1:1" },
      { event: "done", data: { ...CRISIS, seq: 2 } },
    ]);
    assert.deepEqual(
      s.messages.map((m) => m.id),
      ["u1", "n3"],
    );
    assert.ok(!s.messages.some((m) => m.status === "streaming"));
  });

  test("a blocked user message in the stream keeps its status", () => {
    const blocked = { ...USER, status: "blocked" };
    const s = run(startStream([]), [
      { event: "user_message", data: blocked },
      { event: "notice", data: { ...CRISIS, seq: 2 } },
      { event: "done", data: { ...CRISIS, seq: 2 } },
    ]);
    assert.equal(findById(s, "u1").status, "blocked");
  });
});
