// How one message is shown, decided without the DOM (render.js builds the elements; Node's
// test runner reads this too, tests/web/js/): who it is from, its status line, whether it
// offers Retry. Safety notices (role "notice": the operator's texts, never the avatar's)
// are told apart from both sides of the conversation by their label and class.

/** The label of each kind of notice (MessageRead.notice_kind). */
export const NOTICE_LABELS = {
  disclosure: "AI disclosure",
  break: "Break reminder",
  crisis: "Crisis support",
};

const STATUS_TEXT = {
  assistant: {
    streaming: "replying…",
    stopped: "stopped",
    failed: "failed",
    interrupted: "interrupted",
    filtered: "withheld",
  },
  user: {
    blocked: "not sent",
  },
};

/** Statuses of a reply that Retry is not offered on: it is still coming, it came, or
 * moderation withheld it (a deliberate outcome, not a failure). */
const NO_RETRY = new Set(["streaming", "complete", "filtered"]);

/**
 * What the page shows of `message`.
 * @param {object} message a MessageRead (or a reply being streamed in)
 * @param {object} [options]
 * @param {string} [options.avatarName] who the replies are from
 * @param {boolean} [options.latest] whether it is the latest reply of the conversation
 * @returns {{className: string, who: string, kind: string|null, status: string|null,
 *   persona: {personality: string, version: number}|null, retry: boolean}}
 */
export function messageView(message, { avatarName = "Avatar", latest = false } = {}) {
  if (message.role === "notice") {
    const kind = Object.hasOwn(NOTICE_LABELS, message.notice_kind) ? message.notice_kind : "other";
    return {
      className: `message safety-notice safety-${kind}`,
      who: NOTICE_LABELS[kind] ?? "Notice",
      kind,
      status: null,
      persona: null,
      retry: false,
    };
  }
  const reply = message.role === "assistant";
  const statusText = (STATUS_TEXT[message.role] ?? {})[message.status] ?? null;
  return {
    className: `message ${message.role}`,
    who: reply ? avatarName : "You",
    kind: null,
    status: statusText && reply && message.error_code ? `${statusText} (${message.error_code})` : statusText,
    persona:
      reply && message.personality ? { personality: message.personality, version: message.persona_version } : null,
    retry: reply && latest && !NO_RETRY.has(message.status),
  };
}
