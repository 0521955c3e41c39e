// A reply streaming in, as a reducer: (stream state, one server-sent event) -> stream state.
// Pure: no DOM, no storage, no network; what the page must do about an event (render a
// message, keep or drop the reply's progress, announce, scroll) is listed in `effects`
// for chat.js to carry out. Tested in Node (tests/web/js/stream.test.mjs).
//
// The events, as POST .../messages (Accept: text/event-stream), POST .../regenerate and
// GET .../messages/{id}/stream send them: user_message, notice (a safety notice saved with
// the message: AI disclosure, break reminder, crisis services; any number), assistant_message,
// then delta (text to append) any number of times, with reset (start the text over, when
// following a reply from an event id the server no longer has), ending with done, filtered
// (moderation withheld the reply: its data, the reply as saved with the operator's
// replacement text, replaces what was shown) or error. A crisis notice given in place of a
// reply: no assistant_message, and done carries the notice (role "notice").

import { findMessage, upsertMessage } from "./messages.js";

/**
 * The state before the first event.
 * @param {object[]} messages the conversation's messages (chat.js passes in the current
 *   ones before each event: they may change meanwhile, e.g. earlier messages loaded)
 * @param {object} [options]
 * @param {string|null} [options.replyId] the reply being followed (resume), if known
 * @param {string|null} [options.lastEventId] the id of the last event already read (resume)
 * @param {string} [options.pendingId] the id to show text under when a replayed send
 *   streams text without naming its reply first (`done` names it)
 */
export function startStream(messages, { replyId = null, lastEventId = null, pendingId = "pending-reply" } = {}) {
  return {
    messages,
    reply: replyId ? findMessage(messages, replyId) : null,
    lastEventId,
    pendingId,
    // The stream is over: {type: "done", reply}, {type: "filtered", reply} (the reply as
    // saved), {type: "notice", notice} (a crisis notice instead of a reply) or
    // {type: "error", error, failed}.
    outcome: null,
    effects: [], // what the page does about the last event, in order
  };
}

export function isPending(message) {
  return message.id.startsWith("pending-");
}

/** The state after `{event, data, id}` (as readEvents yields them). */
export function reduceStream(state, { event, data, id = null }) {
  const lastEventId = id ?? state.lastEventId;
  const s = { ...state, lastEventId, effects: [] };
  const put = (message) => {
    s.messages = upsertMessage(s.messages, message);
    s.effects.push({ type: "render", id: message.id });
  };
  // What `done` or `filtered` names replaces what was shown under another id (a replayed
  // send's placeholder): nothing is left spinning.
  const dropOther = (id) => {
    if (s.reply && s.reply.id !== id) s.messages = s.messages.filter((m) => m.id !== s.reply.id);
  };
  switch (event) {
    case "user_message":
      put(data);
      s.effects.push({ type: "user_message", id: data.id });
      return s;
    case "notice":
      put(data);
      s.effects.push({ type: "scroll" });
      return s;
    case "assistant_message":
      s.reply = { ...data };
      put(s.reply);
      s.effects.push({ type: "replying", id: data.id });
      return s;
    case "reset":
      if (s.reply) {
        s.reply = { ...s.reply, content: "" };
        put(s.reply);
      }
      return s;
    case "delta": {
      // A replayed send announces no reply: show the text until `done` names it.
      const reply = s.reply ?? {
        id: s.pendingId,
        role: "assistant",
        seq: Number.MAX_SAFE_INTEGER,
        content: "",
        status: "streaming",
      };
      s.reply = { ...reply, content: reply.content + data.content, status: "streaming" };
      put(s.reply);
      if (!isPending(s.reply)) {
        s.effects.push({ type: "save_progress", id: s.reply.id, text: s.reply.content, lastEventId });
      }
      s.effects.push({ type: "scroll" });
      return s;
    }
    case "done":
      dropOther(data.id);
      if (data.role === "notice") {
        // A crisis notice in place of a reply: the conversation goes on with no reply.
        s.reply = null;
        put(data);
        s.effects.push({ type: "scroll" });
        s.outcome = { type: "notice", notice: data };
        return s;
      }
      s.reply = data;
      put(data);
      s.effects.push({ type: "drop_progress", id: data.id }, { type: "replied", id: data.id });
      s.outcome = { type: "done", reply: data };
      return s;
    case "filtered":
      dropOther(data.id);
      s.reply = data;
      put(data);
      s.effects.push({ type: "drop_progress", id: data.id }, { type: "filtered", id: data.id });
      s.outcome = { type: "filtered", reply: data };
      return s;
    case "error": {
      const failedId = data.details?.assistant_message_id || s.reply?.id;
      // `failed` is the reply as it was before this event: what Retry retries.
      const failed = failedId ? findMessage(s.messages, failedId) : null;
      if (failed) {
        put({ ...failed, status: data.details?.status || "failed", error_code: data.code });
        s.effects.push({ type: "drop_progress", id: failedId });
      }
      s.outcome = { type: "error", error: data, failed };
      return s;
    }
    default:
      return s; // an event this client does not know: only its id counts
  }
}
