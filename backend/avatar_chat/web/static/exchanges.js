// The tools on the messages, decided without the DOM (messagetools.js builds them; Node's
// test runner reads this too, tests/web/js/exchanges.test.mjs): which message offers
// Regenerate, Edit and Delete, when an exchange's alternative replies are worth asking
// for (GET .../variants, never for every message), the ‹ 2/3 › between them, what a
// delete leaves, what a refusal says, and the avatar's image beside its replies.

const pending = (message) => message.id.startsWith("pending-");

/** The latest message of the user's (the one Edit is offered on), or null. */
export function latestUserMessage(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.role === "user" && !pending(m)) return m;
  }
  return null;
}

/** The latest reply of the list that is saved (not a placeholder), or null. */
function latestSavedReply(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.role === "assistant" && !pending(m)) return m;
  }
  return null;
}

/** Statuses of the latest reply that Regenerate is offered on (Retry covers the others). */
const REGENERABLE = new Set(["complete", "filtered"]);

/**
 * What `message` offers. Regenerate: the latest reply, settled (complete or withheld),
 * while nothing streams; Edit: the user's latest message (not one moderation refused),
 * while nothing streams; Delete: any saved message of either side (not a safety notice),
 * also while a reply streams (the API then says to stop it first: 409 reply_in_progress).
 * @returns {{regenerate: boolean, edit: boolean, delete: boolean}}
 */
export function messageTools(message, messages, { streaming = false } = {}) {
  if (pending(message) || (message.role !== "user" && message.role !== "assistant")) {
    return { regenerate: false, edit: false, delete: false };
  }
  return {
    regenerate:
      message.role === "assistant" &&
      !streaming &&
      REGENERABLE.has(message.status) &&
      latestSavedReply(messages)?.id === message.id,
    edit:
      message.role === "user" &&
      !streaming &&
      message.status !== "blocked" &&
      latestUserMessage(messages)?.id === message.id,
    delete: true,
  };
}

/**
 * The seq that follows `message` as far as the page knows: the next message's, or after
 * the last one, the conversation's `last_seq` + 1 (the highest seq allocated); null when
 * not known.
 */
export function nextSeqAfter(messages, message, lastSeq = null) {
  const at = messages.findIndex((m) => m.id === message.id);
  for (let i = at + 1; i < messages.length; i++) if (!pending(messages[i])) return messages[i].seq;
  return Number.isFinite(lastSeq) ? lastSeq + 1 : null;
}

/**
 * Whether the exchange of `reply` may have other replies: it is not the first one
 * (`variant` > 0), or seq numbers after it are missing from the history (every alternative
 * has a seq of its own and only the current one is shown; a deleted message leaves a gap
 * too, so this may ask once for nothing). A reply still streaming is asked about when it ends.
 */
export function mayHaveVariants(reply, nextSeq) {
  if (reply.role !== "assistant" || !reply.reply_to || pending(reply) || reply.status === "streaming") return false;
  return reply.variant > 0 || (nextSeq !== null && nextSeq > reply.seq + 1);
}

/**
 * Whether to ask GET .../variants for the exchange of `reply`: it may have other replies,
 * and what is known of them (`entry`, state.variants[reply.reply_to]) is nothing yet, or
 * predates this reply (a regenerate, an edit). `entry.asked` is the reply it was last asked
 * for: asked once per reply, whatever came back.
 */
export function needsVariants(entry, reply, nextSeq) {
  if (!mayHaveVariants(reply, nextSeq)) return false;
  if (!entry) return true;
  if (entry.loading || entry.asked === reply.id) return false;
  return !entry.items?.some((item) => item.id === reply.id);
}

/**
 * The ‹ 2/3 › of the reply `shownId`: null unless its exchange has two replies or more.
 * @returns {{position: number, count: number, previous: object|null, next: object|null,
 *   label: string, spoken: string}|null}
 */
export function variantNav(entry, shownId) {
  const items = entry?.items ?? [];
  if (items.length < 2) return null;
  const at = items.findIndex((item) => item.id === shownId);
  if (at < 0) return null;
  return {
    position: at + 1,
    count: items.length,
    previous: items[at - 1] ?? null,
    next: items[at + 1] ?? null,
    label: `${at + 1}/${items.length}`,
    spoken: `Reply ${at + 1} of ${items.length}`,
  };
}

/** What is known of an exchange after `reply` became its current one (PUT .../current). */
export function withCurrent(entry, reply) {
  const items = (entry?.items ?? []).map((item) =>
    item.id === reply.id ? { ...item, ...reply, is_current: true } : { ...item, is_current: false },
  );
  return { ...entry, items, current_id: reply.id };
}

/** What is known of an exchange with the reply `reply` in it as it is now (a stream ended). */
export function withReply(entry, reply) {
  if (!entry?.items?.some((item) => item.id === reply.id)) return entry;
  return { ...entry, items: entry.items.map((item) => (item.id === reply.id ? { ...item, ...reply } : item)) };
}

/** The messages left after `message` was deleted: a message of the user's takes its replies. */
export function withoutDeleted(messages, message) {
  return messages.filter((m) => m.id !== message.id && m.reply_to !== message.id);
}

/** What the delete dialog asks about `message`. */
export function deleteQuestion(message) {
  return message.role === "user"
    ? {
        title: "Delete your message?",
        text: "Your message and the replies to it are deleted, for good. The avatar no longer reads them.",
      }
    : {
        title: "Delete this reply?",
        text: "The reply is deleted, for good; if the message had other replies, the latest of them is shown.",
      };
}

/**
 * What a refused tool says. `what` is what was being done ("Deleting the message"); the
 * API's own message is kept, with what to do for the refusals that have a remedy.
 */
export function toolFailure(err, what) {
  if (err?.status === 0) return err.message;
  switch (err?.code) {
    case "reply_in_progress":
      return `${what} failed: a reply is still being written. Stop the reply first, then try again.`;
    case "not_latest":
      return `${what} failed: only the latest message can be edited, and only the latest reply regenerated. ${err.message}`;
    case "message_blocked": {
      const crisis = err.details?.crisis_notice;
      return crisis ? `${err.message} ${crisis}` : err.message;
    }
    case "message_not_found":
      return `${what} failed: the message is gone (deleted elsewhere?). Reload the conversation to see it as it is.`;
    default:
      return `${what} failed: ${err?.message || err}`;
  }
}

/**
 * The URL of the avatar's 128-pixel image to show beside its replies, from
 * state.avatarImage ({url128, url512, expiresAt} in ms, or null): null when there is none,
 * or its URL expires within `marginMs` (never an expired URL; the avatar panel renews it).
 */
export function avatarImageUrl(image, now = Date.now(), marginMs = 5_000) {
  if (!image?.url128) return null;
  const expiresAt = Number(image.expiresAt);
  if (!Number.isFinite(expiresAt) || expiresAt - marginMs <= now) return null;
  return image.url128;
}
