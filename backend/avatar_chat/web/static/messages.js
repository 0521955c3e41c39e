// The current conversation's messages as a list ordered by seq: pure operations on it, the
// same in the page and in Node's test runner (tests/web/js/).

/** `messages` with `message` added, or merged into the one with its id; when it is the
 * current alternative of a reply, the other alternatives of that reply are dropped (a
 * regenerated reply replaces the one before). A new list; the old one is left as it was. */
export function upsertMessage(messages, message) {
  const at = messages.findIndex((m) => m.id === message.id);
  let next;
  if (at >= 0) {
    next = messages.slice();
    next[at] = { ...messages[at], ...message };
  } else {
    next = [...messages, message].sort((a, b) => a.seq - b.seq);
  }
  if (message.role === "assistant" && message.is_current !== false && message.reply_to) {
    next = next.filter((m) => m.id === message.id || m.role !== "assistant" || m.reply_to !== message.reply_to);
  }
  return next;
}

export function findMessage(messages, id) {
  return messages.find((m) => m.id === id) ?? null;
}

/** The last reply of the list (the one Retry is offered on), or null. */
export function latestReply(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].role === "assistant") return messages[i];
  }
  return null;
}

/** True while one of them is being generated (Stop shown, the log aria-busy). */
export function isStreaming(messages) {
  return messages.some((m) => m.status === "streaming");
}

/** The highest seq of the messages saved (not a reply's placeholder), 0 when none is. */
export function lastSeq(messages) {
  let last = 0;
  for (const m of messages) if (!m.id.startsWith("pending-") && m.seq > last) last = m.seq;
  return last;
}

/**
 * The user's message a 422 message_blocked refused, as shown when it cannot be read back:
 * `details.message_id` is its id; it goes after the messages shown. Null without an id.
 */
export function blockedMessage(details, content, messages) {
  if (!details?.message_id) return null;
  return {
    id: details.message_id,
    role: "user",
    seq: lastSeq(messages) + 1,
    content,
    status: "blocked",
  };
}
