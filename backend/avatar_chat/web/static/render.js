// The messages of the current conversation as the page shows them: one <li> per message in
// the aria-live log, who wrote it, the persona a reply was generated with, its status, and
// Retry on the latest reply when it did not complete; safety notices as cards of their own
// (messageview.js decides what each shows); the tools on each message (Regenerate, ‹ 2/3 ›,
// Edit, Delete, the persona button, the avatar's image: messagetools.js). Text is only
// ever set as textContent.

import { retryReply } from "./chat.js";
import { $ } from "./dom.js";
import { messageView } from "./messageview.js";
import { findMessage, isStreaming, latestReply } from "./messages.js";
import { avatarThumb, ensureVariants, personaButton, renderEditing, toolButtons } from "./messagetools.js";
import { state } from "./state.js";

export function renderMessages() {
  const list = $("messages");
  list.replaceChildren();
  for (const message of state.messages) renderMessage(message);
  $("earlier-messages").hidden = !state.hasEarlier;
}

/** Renders every message again in place (what each offers changed: a turn began or
 * ended, the latest message changed), keeping the focus where it was. */
export function renderAll() {
  for (const message of state.messages) renderMessage(message);
}

/** Renders the message with this id, as it is in the state now. */
export function renderMessageById(id) {
  renderMessage(findMessage(state.messages, id));
}

function messageElement(message) {
  const list = $("messages");
  let item = list.querySelector(`:scope > li[data-id="${message.id}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.id = message.id;
    const meta = document.createElement("p");
    meta.className = "meta";
    const content = document.createElement("p");
    content.className = "content";
    const actions = document.createElement("div");
    actions.className = "message-actions";
    item.append(meta, content, actions);
    const next = [...list.children].find((li) => {
      const other = state.messages.find((m) => m.id === li.dataset.id);
      return other && other.seq > message.seq;
    });
    list.insertBefore(item, next ?? null);
  }
  // Drop the elements of messages no longer in the view (a regenerated reply's sibling,
  // a placeholder replaced): only when there are more elements than messages, so a
  // streamed chunk costs no sweep.
  if (list.children.length > state.messages.length) {
    const shown = new Set(state.messages.map((m) => m.id));
    for (const li of [...list.children]) if (!shown.has(li.dataset.id)) li.remove();
  }
  return item;
}

export function renderMessage(message) {
  if (!message) return;
  const item = messageElement(message);
  const view = messageView(message, {
    avatarName: state.avatar?.name || "Avatar",
    latest: message.role === "assistant" && latestReply(state.messages)?.id === message.id,
  });
  item.className = view.className;
  item.dataset.role = message.role;
  item.dataset.status = message.status;
  if (view.kind) item.dataset.kind = view.kind;
  const meta = item.querySelector(".meta");
  const content = item.querySelector(".content");
  const actions = item.querySelector(".message-actions");
  // A control of this message that has the focus gets it back once it is built again.
  const focused = item.contains(document.activeElement) ? document.activeElement.dataset.tool : null;
  const thumb = avatarThumb(message, meta.querySelector(".avatar-thumb"));
  meta.replaceChildren();
  if (thumb) meta.append(thumb);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = view.who;
  meta.append(who);
  if (view.persona) meta.append(personaButton(view.persona));
  if (view.status) {
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = view.status;
    meta.append(status);
  }
  content.textContent = message.content;
  content.hidden = renderEditing(item, message);
  item.setAttribute("aria-busy", String(message.status === "streaming"));

  actions.replaceChildren();
  if (view.retry) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", "Retry this reply");
    retry.dataset.tool = "retry";
    retry.addEventListener("click", () => retryReply(message));
    actions.append(retry);
  }
  actions.append(...toolButtons(message));
  if (focused) item.querySelector(`[data-tool="${focused}"]:not(:disabled)`)?.focus();
  ensureVariants(message);
  const streamingNow = isStreaming(state.messages);
  $("stop").hidden = !streamingNow;
  $("messages").setAttribute("aria-busy", String(streamingNow));
}

export function scrollToEnd(force = false) {
  const list = $("messages");
  const near = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
  if (force || near) list.scrollTop = list.scrollHeight;
}
