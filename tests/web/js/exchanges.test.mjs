// The tools on the messages (exchanges.js): which message offers what, when an exchange's
// alternatives are asked for, the ‹ n/m › between them, a delete, the refusals' words, and
// the avatar's image URL.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  avatarImageUrl,
  deleteQuestion,
  latestUserMessage,
  mayHaveVariants,
  messageTools,
  needsVariants,
  nextSeqAfter,
  toolFailure,
  variantNav,
  withCurrent,
  withoutDeleted,
  withReply,
} from "../../../backend/avatar_chat/web/static/exchanges.js";

const user = (id, seq, extra = {}) => ({ id, role: "user", seq, content: id, status: "complete", ...extra });
const reply = (id, seq, replyTo, extra = {}) => ({
  id,
  role: "assistant",
  seq,
  reply_to: replyTo,
  content: id,
  status: "complete",
  variant: 0,
  is_current: true,
  ...extra,
});
const notice = (id, seq) => ({ id, role: "notice", seq, content: id, status: "complete", notice_kind: "disclosure" });

describe("messageTools", () => {
  const messages = [notice("n0", 1), user("u1", 2), reply("a1", 3, "u1"), user("u2", 4), reply("a2", 5, "u2")];

  test("Regenerate on the latest reply, Edit on the latest message, Delete on both sides", () => {
    assert.deepEqual(messageTools(messages[4], messages), { regenerate: true, edit: false, delete: true });
    assert.deepEqual(messageTools(messages[3], messages), { regenerate: false, edit: true, delete: true });
    assert.deepEqual(messageTools(messages[2], messages), { regenerate: false, edit: false, delete: true });
    assert.deepEqual(messageTools(messages[1], messages), { regenerate: false, edit: false, delete: true });
  });

  test("nothing on a safety notice or a placeholder", () => {
    const none = { regenerate: false, edit: false, delete: false };
    assert.deepEqual(messageTools(messages[0], messages), none);
    const pending = reply("pending-x", Number.MAX_SAFE_INTEGER, null, { status: "streaming" });
    assert.deepEqual(messageTools(pending, [...messages, pending]), none);
  });

  test("while a reply streams only Delete (the API says to stop it first)", () => {
    const streaming = [...messages.slice(0, 4), reply("a2", 5, "u2", { status: "streaming" })];
    assert.deepEqual(messageTools(streaming[4], streaming, { streaming: true }), {
      regenerate: false,
      edit: false,
      delete: true,
    });
    assert.deepEqual(messageTools(streaming[3], streaming, { streaming: true }), {
      regenerate: false,
      edit: false,
      delete: true,
    });
  });

  test("Regenerate only on a settled reply (Retry covers the others), withheld included", () => {
    for (const status of ["failed", "stopped", "interrupted"]) {
      const list = [user("u1", 1), reply("a1", 2, "u1", { status })];
      assert.equal(messageTools(list[1], list).regenerate, false, status);
    }
    const withheld = [user("u1", 1), reply("a1", 2, "u1", { status: "filtered" })];
    assert.equal(messageTools(withheld[1], withheld).regenerate, true);
  });

  test("no Edit on a message moderation refused", () => {
    const list = [user("u1", 1), reply("a1", 2, "u1"), user("u2", 3, { status: "blocked" })];
    assert.equal(messageTools(list[2], list).edit, false);
    assert.equal(latestUserMessage(list).id, "u2");
  });
});

describe("which replies' alternatives are asked for", () => {
  test("the seq after a message: the next one's, or the conversation's last_seq + 1", () => {
    const list = [user("u1", 1), reply("a1", 2, "u1"), user("u2", 5)];
    assert.equal(nextSeqAfter(list, list[1], 9), 5);
    assert.equal(nextSeqAfter(list, list[2], 9), 10);
    assert.equal(nextSeqAfter(list, list[2], null), null);
  });

  test("a reply that is not the first, or with seqs missing after it", () => {
    assert.equal(mayHaveVariants(reply("a", 2, "u", { variant: 1 }), 3), true);
    assert.equal(mayHaveVariants(reply("a", 2, "u"), 3), false); // the next seq follows: one reply
    assert.equal(mayHaveVariants(reply("a", 2, "u"), 5), true); // 3 and 4 are elsewhere
    assert.equal(mayHaveVariants(reply("a", 2, "u"), null), false);
    assert.equal(mayHaveVariants(reply("a", 2, "u", { variant: 2, status: "streaming" }), 3), false);
    assert.equal(mayHaveVariants(user("u", 1), 9), false);
  });

  test("asked once per reply: not again while asking, nor for a reply already known", () => {
    const r = reply("a2", 7, "u1", { variant: 1 });
    assert.equal(needsVariants(undefined, r, 8), true);
    assert.equal(needsVariants({ loading: true, asked: "a2" }, r, 8), false);
    assert.equal(needsVariants({ items: [{ id: "a1" }, { id: "a2" }] }, r, 8), false);
    // A regenerate: a reply the known list has not got yet.
    const newer = reply("a3", 9, "u1", { variant: 2 });
    assert.equal(needsVariants({ items: [{ id: "a1" }, { id: "a2" }], asked: "a2" }, newer, 10), true);
    // Asked for it and it was not in the answer (deleted meanwhile): not again.
    assert.equal(needsVariants({ items: [], asked: "a3" }, newer, 10), false);
    assert.equal(needsVariants(undefined, reply("a", 2, "u"), 3), false);
  });
});

describe("variantNav and choosing", () => {
  const entry = {
    items: [
      reply("a1", 2, "u1", { is_current: false }),
      reply("a2", 3, "u1", { variant: 1, is_current: false }),
      reply("a3", 4, "u1", { variant: 2 }),
    ],
    current_id: "a3",
  };

  test("‹ n/m ›: where the shown reply is, and its neighbours", () => {
    const nav = variantNav(entry, "a3");
    assert.equal(nav.label, "3/3");
    assert.equal(nav.spoken, "Reply 3 of 3");
    assert.equal(nav.previous.id, "a2");
    assert.equal(nav.next, null);
    const first = variantNav(entry, "a1");
    assert.equal(first.label, "1/3");
    assert.equal(first.previous, null);
    assert.equal(first.next.id, "a2");
  });

  test("none with one reply, nothing known, or a reply not in the list", () => {
    assert.equal(variantNav({ items: [reply("a1", 2, "u1")] }, "a1"), null);
    assert.equal(variantNav(undefined, "a1"), null);
    assert.equal(variantNav(entry, "zz"), null);
  });

  test("withCurrent: the chosen one is current, the others are not", () => {
    const after = withCurrent(entry, { ...entry.items[0], is_current: true, content: "fresh" });
    assert.equal(after.current_id, "a1");
    assert.deepEqual(
      after.items.map((item) => item.is_current),
      [true, false, false],
    );
    assert.equal(after.items[0].content, "fresh");
    assert.equal(entry.current_id, "a3"); // the old one left as it was
  });

  test("withReply: a reply that ended is updated in the list, an unknown one changes nothing", () => {
    const after = withReply(entry, { id: "a3", content: "done", status: "complete" });
    assert.equal(after.items[2].content, "done");
    assert.equal(withReply(entry, { id: "zz" }), entry);
  });
});

describe("delete", () => {
  test("a message of the user's takes its replies; a reply goes alone", () => {
    const list = [user("u1", 1), reply("a1", 2, "u1"), notice("n", 3), user("u2", 4), reply("a2", 5, "u2")];
    assert.deepEqual(
      withoutDeleted(list, list[0]).map((m) => m.id),
      ["n", "u2", "a2"],
    );
    assert.deepEqual(
      withoutDeleted(list, list[4]).map((m) => m.id),
      ["u1", "a1", "n", "u2"],
    );
  });

  test("what the confirmation asks", () => {
    assert.match(deleteQuestion(user("u", 1)).text, /replies/);
    assert.equal(deleteQuestion(reply("a", 2, "u")).title, "Delete this reply?");
  });
});

describe("toolFailure", () => {
  const err = (status, code, message, details = null) => ({ status, code, message, details });

  test("409 reply_in_progress says to stop the reply first", () => {
    const text = toolFailure(err(409, "reply_in_progress", "This reply is still being generated; stop it first."), "Deleting the message");
    assert.match(text, /^Deleting the message failed/);
    assert.match(text, /Stop the reply first/);
  });

  test("422 message_blocked is the API's own words, with a crisis notice when it gave one", () => {
    const words = "This message was not sent: it goes against the content guidelines.";
    assert.equal(toolFailure(err(422, "message_blocked", words), "Editing the message"), words);
    const crisis = toolFailure(err(422, "message_blocked", words, { crisis_notice: "Call 988." }), "Editing");
    assert.equal(crisis, `${words} Call 988.`);
  });

  test("409 not_latest, a network failure, anything else", () => {
    assert.match(toolFailure(err(409, "not_latest", "Not the latest."), "Editing the message"), /only the latest/);
    assert.equal(toolFailure(err(0, "network_error", "Cannot reach the server."), "Deleting"), "Cannot reach the server.");
    assert.equal(toolFailure(err(500, "internal", "Boom."), "Deleting"), "Deleting failed: Boom.");
  });
});

describe("avatarImageUrl", () => {
  const now = 1_000_000;

  test("the 128-pixel URL while it holds", () => {
    assert.equal(avatarImageUrl({ url128: "/s/128.webp", url512: "/s/512.webp", expiresAt: now + 60_000 }, now), "/s/128.webp");
  });

  test("never an expired URL, nor one about to expire; none without an image", () => {
    assert.equal(avatarImageUrl({ url128: "/s/128.webp", expiresAt: now - 1 }, now), null);
    assert.equal(avatarImageUrl({ url128: "/s/128.webp", expiresAt: now + 1_000 }, now), null);
    assert.equal(avatarImageUrl({ url128: "/s/128.webp" }, now), null);
    assert.equal(avatarImageUrl(null, now), null);
    assert.equal(avatarImageUrl(undefined, now), null);
  });
});
