// When to try again, and how long to wait: the decisions only (no timers, no DOM), so that
// Node's test runner reads them too (tests/web/js/).

/** Automatic retries of one call (503, 409 send_in_progress) before the error is shown. */
export const MAX_AUTOMATIC_RETRIES = 4;
/** Attempts at following a reply whose stream was cut, before Retry is offered. */
export const MAX_RESUME_ATTEMPTS = 5;
/** A 429 without Retry-After: wait this long. */
export const DEFAULT_RATE_LIMIT_WAIT_S = 5;

/** Seconds from a Retry-After value (delay-seconds or an HTTP date), null when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined) return null;
  const seconds = Number.parseInt(value, 10);
  if (!Number.isNaN(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - now) / 1000));
}

/** Answers worth retrying by themselves: the database is away (503), or the same send is
 * still being answered (409 send_in_progress); both say when in Retry-After. */
export function retriesByItself(err) {
  return err.status === 503 || (err.status === 409 && err.code === "send_in_progress");
}

/** Seconds to wait before automatic retry number `attempt` (1, 2, ...) of a call that
 * failed with `err`: backoff 1, 2, 4, 8 s, or Retry-After when longer; null: no retry. */
export function automaticRetrySeconds(err, attempt) {
  if (!retriesByItself(err) || attempt > MAX_AUTOMATIC_RETRIES) return null;
  const backoff = 2 ** (attempt - 1);
  return Math.max(err.retryAfter ?? 0, backoff);
}

/** Milliseconds to wait before following a cut reply again after attempt `attempt`
 * failed (1 s, 2 s, 3 s, 4 s); null once the attempts are spent. */
export function resumeBackoffMs(attempt) {
  return attempt < MAX_RESUME_ATTEMPTS ? 1000 * attempt : null;
}

/** A 429's wait: what Retry-After says, at least 1 s. */
export function countdownSeconds(retryAfter) {
  return Math.max(1, retryAfter ?? DEFAULT_RATE_LIMIT_WAIT_S);
}

/** What a 429 notice says, and whether Send and Retry are still held back, with `left` s to go. */
export function countdownView(code, left) {
  const reason =
    code === "too_many_streams" ? "Too many replies are being written at once" : "You are sending too fast";
  return {
    text: left > 0 ? `${reason}. You can try again in ${left} s.` : `${reason}. You can try again now.`,
    held: left > 0,
  };
}

/**
 * How a reply that did not complete is retried: "resend" (the same send again, same
 * Idempotency-Key) when this page sent the message it answers and it was not stopped,
 * else "regenerate" (another reply to the same message).
 */
export function retryPlan(lastSend, conversationId, reply) {
  const sentHere =
    lastSend && lastSend.conversationId === conversationId && lastSend.userMessageId === reply.reply_to;
  return sentHere && reply.status !== "stopped" ? "resend" : "regenerate";
}
