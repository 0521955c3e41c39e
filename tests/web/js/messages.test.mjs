// The message list (messages.js): ordered by seq, merged by id, one alternative per reply.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  blockedMessage,
  findMessage,
  isStreaming,
  lastSeq,
  latestReply,
  upsertMessage,
} from "../../../backend/avatar_chat/web/static/messages.js";

const user = (id, seq) => ({ id, role: "user", seq, content: id, status: "complete" });
const reply = (id, seq, replyTo, extra = {}) => ({
  id,
  role: "assistant",
  seq,
  reply_to: replyTo,
  content: id,
  status: "complete",
  ...extra,
});

describe("upsertMessage", () => {
  test("adds in seq order and returns a new list", () => {
    const before = [user("u1", 1), user("u3", 3)];
    const after = upsertMessage(before, user("u2", 2));
    assert.deepEqual(
      after.map((m) => m.id),
      ["u1", "u2", "u3"],
    );
    assert.deepEqual(
      before.map((m) => m.id),
      ["u1", "u3"],
    );
  });

  test("merges into the message with the same id", () => {
    const after = upsertMessage([user("u1", 1), reply("a1", 2, "u1", { status: "streaming" })], {
      id: "a1",
      content: "more",
    });
    assert.deepEqual(after[1], { ...reply("a1", 2, "u1"), content: "more", status: "streaming" });
  });

  test("the current alternative of a reply replaces the others", () => {
    const list = [user("u1", 1), reply("a1", 2, "u1"), user("u2", 3), reply("a2", 4, "u2")];
    const after = upsertMessage(list, reply("a3", 5, "u1", { is_current: true }));
    assert.deepEqual(
      after.map((m) => m.id),
      ["u1", "u2", "a2", "a3"],
    );
  });

  test("an alternative that is not current replaces nothing", () => {
    const list = [user("u1", 1), reply("a1", 2, "u1")];
    const after = upsertMessage(list, reply("a0", 0, "u1", { is_current: false }));
    assert.deepEqual(
      after.map((m) => m.id),
      ["a0", "u1", "a1"],
    );
  });
});

test("latestReply, findMessage and isStreaming", () => {
  const list = [user("u1", 1), reply("a1", 2, "u1"), user("u2", 3)];
  assert.equal(latestReply(list).id, "a1");
  assert.equal(latestReply([user("u1", 1)]), null);
  assert.equal(findMessage(list, "u2"), list[2]);
  assert.equal(findMessage(list, "nope"), null);
  assert.equal(isStreaming(list), false);
  assert.equal(isStreaming([...list, reply("a2", 4, "u2", { status: "streaming" })]), true);
});

test("lastSeq: the highest seq saved, never a placeholder's", () => {
  assert.equal(lastSeq([]), 0);
  const pending = { id: "pending-x", role: "assistant", seq: Number.MAX_SAFE_INTEGER, content: "" };
  assert.equal(lastSeq([user("u1", 1), reply("a1", 4, "u1"), user("u2", 3), pending]), 4);
});

describe("blockedMessage (422 message_blocked)", () => {
  test("the refused message, by the id the error names, after those shown, marked blocked", () => {
    const list = [user("u1", 1), reply("a1", 2, "u1")];
    const details = { categories: ["sexual"], message_id: "u2" };
    assert.deepEqual(blockedMessage(details, "the text", list), {
      id: "u2",
      role: "user",
      seq: 3,
      content: "the text",
      status: "blocked",
    });
    assert.deepEqual(
      upsertMessage(list, blockedMessage(details, "the text", list)).map((m) => [m.id, m.status]),
      [
        ["u1", "complete"],
        ["a1", "complete"],
        ["u2", "blocked"],
      ],
    );
  });

  test("no id named: nothing to show", () => {
    assert.equal(blockedMessage(null, "x", []), null);
    assert.equal(blockedMessage({ categories: [] }, "x", []), null);
  });
});
