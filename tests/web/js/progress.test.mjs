// A streaming reply's progress kept for a reload (progress.js), and where following the
// reply starts from: its last event id (Last-Event-ID) and text, or the beginning.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { PROGRESS_PREFIX, progressStore, resumeFrom } from "../../../backend/avatar_chat/web/static/progress.js";

/** The part of the Storage interface the store uses, over a Map. */
function memoryStorage() {
  const items = new Map();
  return {
    items,
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
  };
}

describe("progressStore", () => {
  test("keeps the text and last event id of a reply until dropped", () => {
    const storage = memoryStorage();
    const store = progressStore(() => storage);
    assert.equal(store.load("a1"), null);
    store.save("a1", "Hi", "3");
    store.save("a1", "Hi there", "4");
    assert.deepEqual(store.load("a1"), { text: "Hi there", lastEventId: "4" });
    assert.deepEqual([...storage.items.keys()], [PROGRESS_PREFIX + "a1"]);
    store.drop("a1");
    assert.equal(store.load("a1"), null);
  });

  test("a full or unreadable storage loses the progress, never the page", () => {
    const full = { ...memoryStorage(), setItem: () => { throw new Error("QuotaExceededError"); } };
    assert.doesNotThrow(() => progressStore(() => full).save("a1", "Hi", "3"));
    const garbled = memoryStorage();
    garbled.setItem(PROGRESS_PREFIX + "a1", "{not json");
    assert.equal(progressStore(() => garbled).load("a1"), null);
  });
});

describe("resumeFrom", () => {
  const reply = { id: "a1", role: "assistant", seq: 2, content: "from the server", status: "streaming" };

  test("with a last event id: from there, with the text kept", () => {
    assert.deepEqual(resumeFrom(reply, { text: "Hi", lastEventId: "4" }), {
      message: { ...reply, content: "Hi" },
      headers: { "Last-Event-ID": "4" },
      lastEventId: "4",
    });
  });

  test("without: from the beginning, with no text", () => {
    for (const kept of [null, { text: "Hi", lastEventId: null }]) {
      assert.deepEqual(resumeFrom(reply, kept), {
        message: { ...reply, content: "" },
        headers: {},
        lastEventId: null,
      });
    }
  });
});
