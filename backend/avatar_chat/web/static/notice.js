// Errors and statuses: the notice bar (with Retry), the screen-reader status line, and a
// 429: a quota used up (when it resets), or Retry-After counted down with Send held back.

import { ApiError } from "./api.js";
import { $ } from "./dom.js";
import { countdownSeconds, countdownView } from "./retry.js";
import { state } from "./state.js";
import { quotaMessage } from "./usage.js";

export function notify(text, { retry = null, kind = "error" } = {}) {
  const notice = $("notice");
  notice.dataset.kind = kind;
  notice.setAttribute("role", kind === "error" || kind === "quota" ? "alert" : "status");
  $("notice-text").textContent = text;
  state.retryAction = retry;
  $("notice-retry").hidden = !retry;
  $("notice-retry").disabled = false;
  notice.hidden = false;
}

export function clearNotice() {
  stopCountdown();
  $("notice").hidden = true;
  state.retryAction = null;
}

export function announce(text) {
  $("chat-status").textContent = text;
}

export function stopCountdown() {
  if (state.countdown === null) return;
  clearInterval(state.countdown);
  state.countdown = null;
  $("send").disabled = Boolean(state.streaming);
}

/** A readable sentence for any failure; `what` says what was being done. */
export function describe(err, what) {
  if (err instanceof ApiError) {
    if (err.status === 0) return err.message;
    return `${what} failed: ${err.message}`;
  }
  return `${what} failed: ${err?.message || err}`;
}

/** 429: a plan's quota used up (quota_exceeded) is told as which one and when it resets,
 * with no Retry and no countdown (hours away; Send stays usable, the plan may change
 * meanwhile); too fast or too many replies at once waits Retry-After, then offers `retry`. */
export function tooManyRequests(err, retry) {
  if (err.code === "quota_exceeded") {
    stopCountdown();
    notify(quotaMessage(err.details, { retryAfter: err.retryAfter, fallback: err.message }), { kind: "quota" });
    return;
  }
  waitThenAllowRetry(err, retry);
}

/** 429: say so, count Retry-After down with Send held back, then offer the retry. */
function waitThenAllowRetry(err, retry) {
  let left = countdownSeconds(err.retryAfter);
  const tick = () => {
    const view = countdownView(err.code, left);
    $("notice-text").textContent = view.text;
    $("notice-retry").disabled = view.held;
    $("send").disabled = view.held;
  };
  stopCountdown();
  notify("", { retry });
  state.countdown = setInterval(() => {
    left -= 1;
    tick();
    if (left <= 0) stopCountdown();
  }, 1000);
  tick();
}
