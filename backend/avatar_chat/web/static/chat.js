// Chatting: send (the reply streams in), follow a reply after a reload or a cut stream,
// stop, retry, regenerate and edit (streamed like a send), and the composer's keys; a
// message moderation refused is shown as not sent.
// The events are read by the reducer of stream.js; this module carries out what it lists
// (render, keep progress, announce) and decides what happens on failure (retry.js says
// when and how long).

import { ApiError, newKey } from "./api.js";
import { afterReply, newConversation, openConversation } from "./conversations.js";
import { $, show } from "./dom.js";
import { toolFailure } from "./exchanges.js";
import { blockedMessage, findMessage, lastSeq, upsertMessage } from "./messages.js";
import { refreshUsage } from "./meter.js";
import { announce, clearNotice, describe, notify, tooManyRequests } from "./notice.js";
import { progressStore, resumeFrom } from "./progress.js";
import { renderAll, renderMessageById, renderMessages, scrollToEnd } from "./render.js";
import { resumeBackoffMs, retryPlan } from "./retry.js";
import { PAGE, state } from "./state.js";
import { isPending, reduceStream, startStream } from "./stream.js";

const progress = progressStore(() => sessionStorage);

function upsert(message) {
  state.messages = upsertMessage(state.messages, message);
  renderMessageById(message.id);
}

export function abortStream() {
  state.streaming?.controller.abort();
  state.streaming = null;
}

function avatarName(fallback) {
  return state.avatar?.name || fallback;
}

/** What the page does about one event, as the reducer listed it. */
function carryOut(effect) {
  switch (effect.type) {
    case "render":
      renderMessageById(effect.id);
      break;
    case "user_message":
      if (state.lastSend && !state.lastSend.userMessageId) state.lastSend.userMessageId = effect.id;
      renderAll(); // the latest message changed: Edit and Regenerate move
      break;
    case "replying":
      if (state.streaming) state.streaming.replyId = effect.id;
      renderAll();
      announce(`${avatarName("The avatar")} is replying.`);
      break;
    case "save_progress":
      progress.save(effect.id, effect.text, effect.lastEventId);
      break;
    case "scroll":
      scrollToEnd();
      break;
    case "drop_progress":
      progress.drop(effect.id);
      break;
    case "replied":
      announce(`${avatarName("The avatar")} replied.`);
      break;
    case "filtered":
      announce(`${avatarName("The avatar")}'s reply was withheld by moderation.`);
      break;
  }
}

/** Reads a send's (or regenerate's, or resume's) events into the view; the reply's final
 * state (complete, or filtered), or the crisis notice given instead of a reply. */
async function consume(events, conversationId, { replyId = null, lastEventId = null } = {}) {
  let stream = startStream(state.messages, { replyId, lastEventId, pendingId: "pending-" + newKey() });
  for await (const event of events) {
    if (state.conversation?.id !== conversationId) return null; // the user went elsewhere
    // The messages may have changed since the last event (earlier ones loaded, a stop).
    stream = reduceStream({ ...stream, messages: state.messages }, event);
    state.messages = stream.messages;
    for (const effect of stream.effects) carryOut(effect);
    const outcome = stream.outcome;
    if (outcome?.type === "done" || outcome?.type === "filtered") return outcome.reply;
    if (outcome?.type === "notice") return outcome.notice;
    if (outcome?.type === "error") {
      const failed = outcome.failed;
      notify(`The reply did not complete: ${outcome.error.message}`, {
        retry: failed ? () => retryReply(failed) : null,
      });
      return null;
    }
  }
  // Neither `done`, `filtered` nor `error`: the connection was cut (a proxy, a server restart).
  throw new ApiError(0, "stream_cut", "The connection closed before the reply was complete.");
}

function setComposerBusy(isBusy) {
  $("send").disabled = isBusy || state.countdown !== null; // a 429's wait holds Send back too
  $("composer-input").readOnly = isBusy;
}

/** A turn is over (done, error, stopped, or refused): the usage meter is read again. */
function streamEnded(controller) {
  if (state.streaming?.controller === controller) state.streaming = null;
  setComposerBusy(false);
  renderAll(); // Retry, Regenerate and Edit are offered again
  refreshUsage();
}

/** Sends `content` (again, with the same key, for a retry); the reply streams in. */
async function send(content, key = newKey()) {
  clearNotice();
  let conversation = state.conversation;
  setComposerBusy(true);
  const controller = new AbortController();
  try {
    if (!conversation) {
      conversation = await newConversation();
      await openConversation(conversation);
    }
    state.lastSend = { conversationId: conversation.id, content, key, userMessageId: null };
    state.streaming = { controller, replyId: null };
    $("stop").hidden = false;
    const events = state.api.events("POST", `/conversations/${conversation.id}/messages`, {
      json: { content },
      headers: { "Idempotency-Key": key },
      signal: controller.signal,
    });
    $("composer-input").value = "";
    const reply = await consume(events, conversation.id);
    if (reply) afterReply(conversation);
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.code === "message_blocked" && conversation) {
      await showBlocked(err, content, conversation.id);
      return;
    }
    if (state.streaming?.replyId) {
      // The stream broke after the reply began: follow it from where it was.
      const reply = findMessage(state.messages, state.streaming.replyId);
      if (reply) {
        await resume(reply);
        return;
      }
    }
    failedSend(err, content, key);
  } finally {
    streamEnded(controller);
  }
}

/** 422 message_blocked: moderation refused the message, which is saved as blocked (never
 * sent to the model). It is shown as not sent, read back with whatever was saved with it
 * (a disclosure notice), and the error's message is told; nothing to retry. */
async function showBlocked(err, content, conversationId) {
  notify(err.message);
  announce("Your message was not sent.");
  try {
    const after = lastSeq(state.messages);
    const { body } = await state.api.get(`/conversations/${conversationId}/messages?after=${after}&limit=${PAGE}`);
    if (state.conversation?.id !== conversationId) return;
    for (const message of body.items) state.messages = upsertMessage(state.messages, message);
  } catch {
    // not read back: the message is shown from the error alone
  }
  if (state.conversation?.id !== conversationId) return;
  const blocked = blockedMessage(err.details, content, state.messages);
  if (blocked && !findMessage(state.messages, blocked.id)) state.messages = upsertMessage(state.messages, blocked);
  renderMessages();
  scrollToEnd(true);
}

function failedSend(err, content, key) {
  if (!(err instanceof ApiError)) {
    notify(describe(err, "Sending"), { retry: () => send(content, key) });
    return;
  }
  if (err.status === 401) return; // back at the sign-in already
  if (!$("composer-input").value) $("composer-input").value = content; // nothing typed is lost
  if (err.code === "avatar_required") {
    show("view-create-avatar", "create-avatar-title");
    return;
  }
  if (err.status === 429) {
    tooManyRequests(err, () => send(content, key));
    return;
  }
  notify(describe(err, "Sending"), { retry: () => send(content, key) });
}

/** A reply being generated (after a reload, or a broken stream): follow it to its end. */
export async function resume(reply, attempt = 1) {
  const conversationId = state.conversation.id;
  const from = resumeFrom(reply, progress.load(reply.id));
  upsert(from.message);
  const controller = new AbortController();
  state.streaming = { controller, replyId: reply.id };
  setComposerBusy(true);
  try {
    const events = state.api.events("GET", `/conversations/${conversationId}/messages/${reply.id}/stream`, {
      headers: from.headers,
      signal: controller.signal,
    });
    const done = await consume(events, conversationId, { replyId: reply.id, lastEventId: from.lastEventId });
    if (done) afterReply(state.conversation);
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.status !== 0) {
      if (err.status !== 401) notify(describe(err, "Following the reply"));
      return;
    }
    const wait = resumeBackoffMs(attempt);
    if (wait !== null) {
      await new Promise((r) => setTimeout(r, wait));
      const current = findMessage(state.messages, reply.id);
      if (current && state.conversation?.id === conversationId) return resume(current, attempt + 1);
    }
    notify(describe(err, "Following the reply"), { retry: () => resume(reply) });
  } finally {
    streamEnded(controller);
  }
}

async function stopReply() {
  const reply = state.messages.find((m) => m.status === "streaming");
  if (!reply || isPending(reply)) return;
  $("stop").disabled = true;
  // The stream of this reply, as it is now: when the answer comes, the page may already be
  // streaming another one (the reply ended by itself and the user sent again), which the
  // answer to this Stop must not cut.
  const streaming = state.streaming;
  try {
    const { body } = await state.api.post(`/conversations/${state.conversation.id}/messages/${reply.id}/stop`);
    if (streaming !== null && state.streaming === streaming) abortStream();
    upsert(body);
    progress.drop(body.id);
    announce("Reply stopped.");
  } catch (err) {
    if (err.status !== 401) notify(describe(err, "Stopping the reply"));
  } finally {
    $("stop").disabled = false;
  }
}

/** Retry a reply that did not complete: the same send again (same Idempotency-Key) when
 * this page sent it, else another reply to the same message (regenerate). */
export async function retryReply(reply) {
  clearNotice();
  if (retryPlan(state.lastSend, state.conversation?.id, reply) === "resend") {
    return send(state.lastSend.content, state.lastSend.key);
  }
  return regenerate(reply, { what: "Retrying" });
}

/** Another reply to the message the latest reply answers (POST .../regenerate), streamed
 * like a send; it replaces the one shown, which stays as an alternative (‹ 1/2 ›). The
 * same Idempotency-Key on Retry: one alternative, however often it is tried. */
export function regenerate(reply, { what = "Regenerating the reply", key = newKey() } = {}) {
  return streamTurn("POST", `/conversations/${state.conversation.id}/messages/${reply.id}/regenerate`, {
    key,
    what,
    again: () => regenerate(reply, { what, key }),
  });
}

/** The user's latest message edited to `content` (PATCH .../messages/{id}), answered again:
 * the new reply streams in like a send's. `onAccepted` is told when the API took the edit
 * (its first event); a refusal (422 message_blocked: the API's own words; 409 not_latest)
 * leaves the message as it was. True when the edit was taken. */
export function editMessage(message, content, { onAccepted = null, key = newKey() } = {}) {
  return streamTurn("PATCH", `/conversations/${state.conversation.id}/messages/${message.id}`, {
    json: { content },
    key,
    what: "Editing the message",
    onAccepted,
    again: () => editMessage(message, content, { key }),
  });
}

/** The events of `events`, telling `onFirst` when the first one came. */
async function* tellFirst(events, onFirst) {
  let first = true;
  for await (const event of events) {
    if (first) {
      first = false;
      onFirst?.();
    }
    yield event;
  }
}

/** A regenerate or an edit: its events read as a send's (consume); a stream cut after the
 * reply began is followed (resume). True when the API took it. */
async function streamTurn(method, path, { json, key, what, again, onAccepted = null }) {
  clearNotice();
  const conversationId = state.conversation.id;
  const controller = new AbortController();
  state.lastSend = null; // its reply is retried with a regenerate, never by sending again
  state.streaming = { controller, replyId: null };
  setComposerBusy(true);
  renderAll(); // no Edit or Regenerate while it streams
  let accepted = false;
  try {
    const events = state.api.events(method, path, {
      json,
      headers: { "Idempotency-Key": key },
      signal: controller.signal,
    });
    const reply = await consume(
      tellFirst(events, () => {
        accepted = true;
        onAccepted?.();
      }),
      conversationId,
    );
    if (reply) afterReply(state.conversation);
    return true;
  } catch (err) {
    if (controller.signal.aborted) return accepted;
    const reply = state.streaming?.replyId ? findMessage(state.messages, state.streaming.replyId) : null;
    if (reply) {
      await resume(reply); // the stream broke after the reply began: follow it
      return true;
    }
    if (err instanceof ApiError && err.status === 429) tooManyRequests(err, again);
    else if (err.status !== 401) {
      const final = err instanceof ApiError && ["message_blocked", "not_latest", "message_not_found"].includes(err.code);
      notify(err instanceof ApiError ? toolFailure(err, what) : describe(err, what), { retry: final ? null : again });
    }
    return accepted;
  } finally {
    streamEnded(controller);
  }
}

export function wireComposer() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const content = $("composer-input").value.trim();
    if (!content || $("send").disabled) return;
    send(content);
  });
  $("composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    } else if (event.key === "Escape" && !$("stop").hidden) {
      event.preventDefault();
      stopReply();
    }
  });
  $("stop").addEventListener("click", stopReply);
  $("notice-retry").addEventListener("click", () => {
    const action = state.retryAction;
    clearNotice();
    action?.();
  });
  $("notice-dismiss").addEventListener("click", clearNotice);
}
