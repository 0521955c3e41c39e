// What one message shows (messageview.js): who it is from, its status, Retry; safety
// notices as the operator's cards, apart from both sides of the conversation.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { NOTICE_LABELS, messageView } from "../../../backend/avatar_chat/web/static/messageview.js";

const reply = (extra = {}) => ({
  id: "a1",
  role: "assistant",
  seq: 2,
  content: "Hi",
  status: "complete",
  personality: "witty",
  persona_version: 3,
  ...extra,
});
const user = (extra = {}) => ({ id: "u1", role: "user", seq: 1, content: "Hello", status: "complete", ...extra });
const notice = (kind) => ({ id: "n1", role: "notice", seq: 1, content: "text", status: "complete", notice_kind: kind });

describe("notices", () => {
  test("each kind has its label and class; none is from the avatar or the user", () => {
    for (const [kind, label] of Object.entries(NOTICE_LABELS)) {
      const view = messageView(notice(kind), { avatarName: "Ava", latest: true });
      assert.deepEqual(view, {
        className: `message safety-notice safety-${kind}`,
        who: label,
        kind,
        status: null,
        persona: null,
        retry: false,
      });
      assert.notEqual(view.who, "Ava");
      assert.notEqual(view.who, "You");
    }
    assert.equal(messageView(notice("crisis")).className, "message safety-notice safety-crisis");
  });

  test("a kind this client does not know is still a notice", () => {
    const view = messageView(notice("curfew"));
    assert.equal(view.className, "message safety-notice safety-other");
    assert.equal(view.who, "Notice");
    assert.equal(messageView(notice(null)).who, "Notice");
    assert.equal(messageView(notice("__proto__")).who, "Notice");
  });
});

describe("replies", () => {
  test("from the avatar, with the persona they were written with", () => {
    const view = messageView(reply(), { avatarName: "Ava", latest: true });
    assert.equal(view.className, "message assistant");
    assert.equal(view.who, "Ava");
    assert.deepEqual(view.persona, { personality: "witty", version: 3 });
    assert.equal(view.status, null);
    assert.equal(view.retry, false);
  });

  test("filtered: marked as withheld, and not offered for Retry", () => {
    const view = messageView(reply({ status: "filtered" }), { latest: true });
    assert.equal(view.status, "withheld");
    assert.equal(view.retry, false);
  });

  test("Retry on the latest reply that did not complete, with its error code", () => {
    for (const status of ["failed", "interrupted", "stopped"]) {
      assert.equal(messageView(reply({ status }), { latest: true }).retry, true, status);
      assert.equal(messageView(reply({ status }), { latest: false }).retry, false, status);
    }
    assert.equal(messageView(reply({ status: "streaming" }), { latest: true }).retry, false);
    assert.equal(
      messageView(reply({ status: "failed", error_code: "moderation_unavailable" })).status,
      "failed (moderation_unavailable)",
    );
  });
});

describe("the user's messages", () => {
  test("from You; a blocked one is marked not sent", () => {
    assert.deepEqual(messageView(user(), { avatarName: "Ava", latest: true }), {
      className: "message user",
      who: "You",
      kind: null,
      status: null,
      persona: null,
      retry: false,
    });
    assert.equal(messageView(user({ status: "blocked" })).status, "not sent");
  });
});
