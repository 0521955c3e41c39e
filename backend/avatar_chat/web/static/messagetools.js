// The tools on the messages shown (exchanges.js decides which, and what they say):
//   Regenerate   the latest reply (POST .../regenerate, streamed: chat.js)
//   ‹ 2/3 ›      an exchange's alternative replies (GET .../variants, asked only for the
//                replies that may have some); choosing one makes it current (PUT .../current)
//   Edit         the user's latest message, in place (PATCH .../messages/{id}, streamed: chat.js)
//   Delete       a message, after a confirmation (DELETE .../messages/{id})
//   persona vN   a button: the "persona-version" event, {version}, that the avatar panel's
//                persona history opens at
//   the image    the avatar's 128-pixel image beside its replies, from state.avatarImage
//                (the avatar panel keeps and renews it and tells "avatar-image")

import { ApiError } from "./api.js";
import { editMessage, regenerate } from "./chat.js";
import { $ } from "./dom.js";
import {
  avatarImageUrl,
  deleteQuestion,
  messageTools,
  needsVariants,
  nextSeqAfter,
  toolFailure,
  variantNav,
  withCurrent,
  withoutDeleted,
} from "./exchanges.js";
import { findMessage, isStreaming, upsertMessage } from "./messages.js";
import { announce, clearNotice, notify } from "./notice.js";
import { renderAll, renderMessageById, renderMessages } from "./render.js";
import { state } from "./state.js";

const streamingNow = () => Boolean(state.streaming) || isStreaming(state.messages);

function button(text, { tool, label = null, className = "secondary tool", onClick }) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.textContent = text;
  b.dataset.tool = tool;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

// --- the avatar's image and the persona label ---------------------------------------------

/** The avatar's image beside a reply (decorative: its name is beside it), or null; the
 * image already there is kept when its URL is the same. */
export function avatarThumb(message, existing) {
  if (message.role !== "assistant") return null;
  const url = avatarImageUrl(state.avatarImage);
  if (!url) return null;
  if (existing?.getAttribute("src") === url) return existing;
  const img = document.createElement("img");
  img.className = "avatar-thumb";
  img.alt = "";
  img.width = 28;
  img.height = 28;
  img.decoding = "async";
  img.src = url;
  return img;
}

/** "friendly · persona v2" as a button: the persona history opens at that version. */
export function personaButton({ personality, version }) {
  const b = button(`${personality} · persona v${version}`, {
    tool: "persona",
    className: "persona",
    onClick: () => document.dispatchEvent(new CustomEvent("persona-version", { detail: { version } })),
  });
  b.dataset.personality = personality;
  b.dataset.personaVersion = String(version);
  b.title = `Generated with the ${personality} persona, version ${version}: show it in the persona history`;
  b.setAttribute("aria-haspopup", "dialog");
  return b;
}

// --- the tools ----------------------------------------------------------------------------

/** The buttons `message` offers, in order: Regenerate, ‹ n/m ›, Edit, Delete. */
export function toolButtons(message) {
  if (state.editing === message.id) return [];
  const offered = messageTools(message, state.messages, { streaming: streamingNow() });
  const tools = [];
  if (offered.regenerate) {
    tools.push(
      button("Regenerate", {
        tool: "regenerate",
        label: "Regenerate this reply",
        onClick: () => regenerate(message),
      }),
    );
  }
  const nav = message.role === "assistant" ? variantNav(state.variants[message.reply_to], message.id) : null;
  if (nav) tools.push(variantControls(message, nav));
  if (offered.edit) {
    tools.push(
      button("Edit", {
        tool: "edit",
        label: "Edit your message",
        onClick: () => {
          state.editing = message.id;
          renderMessageById(message.id);
        },
      }),
    );
  }
  if (offered.delete) {
    tools.push(
      button("Delete", {
        tool: "delete",
        label: message.role === "user" ? "Delete your message" : "Delete this reply",
        onClick: () => askToDelete(message),
      }),
    );
  }
  return tools;
}

function variantControls(message, nav) {
  const group = document.createElement("div");
  group.className = "variants";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Alternative replies: ${nav.spoken}`);
  const previous = button("‹", {
    tool: "previous-variant",
    label: "Previous reply",
    onClick: () => chooseReply(message, nav.previous, "previous-variant"),
  });
  previous.disabled = !nav.previous;
  const position = document.createElement("span");
  position.className = "variant-position";
  position.textContent = nav.label;
  position.setAttribute("aria-hidden", "true");
  const next = button("›", {
    tool: "next-variant",
    label: "Next reply",
    onClick: () => chooseReply(message, nav.next, "next-variant"),
  });
  next.disabled = !nav.next;
  group.append(previous, position, next);
  return group;
}

/** Asks GET .../variants about the exchange of `reply` when it may have other replies
 * (exchanges.js: needsVariants); the reply is shown again with its ‹ n/m ›. */
export function ensureVariants(reply) {
  if (reply.role !== "assistant" || !state.conversation) return;
  const entry = state.variants[reply.reply_to];
  const next = nextSeqAfter(state.messages, reply, state.conversation.last_seq);
  if (!needsVariants(entry, reply, next)) return;
  const conversationId = state.conversation.id;
  state.variants[reply.reply_to] = { ...entry, loading: true, asked: reply.id };
  state.api
    .get(`/conversations/${conversationId}/messages/${reply.id}/variants`)
    .then(({ body }) => {
      if (state.conversation?.id !== conversationId) return;
      state.variants[reply.reply_to] = { ...body, asked: reply.id };
      const shown = state.messages.find((m) => m.role === "assistant" && m.reply_to === reply.reply_to);
      if (shown) renderMessageById(shown.id);
    })
    .catch(() => {
      // not shown: the reply is still there, only its ‹ n/m › is missing
      if (state.variants[reply.reply_to]?.loading) state.variants[reply.reply_to] = { asked: reply.id, items: [] };
    });
}

/** Makes `target` (an alternative of `shown`'s exchange) the current reply. */
async function chooseReply(shown, target, tool) {
  if (!target) return;
  clearNotice();
  try {
    const { body } = await state.api.json("PUT", `/conversations/${state.conversation.id}/messages/${target.id}/current`);
    state.variants[body.reply_to] = withCurrent(state.variants[body.reply_to], body);
    state.messages = upsertMessage(state.messages, body);
    renderMessageById(body.id);
    const nav = variantNav(state.variants[body.reply_to], body.id);
    if (nav) announce(`${nav.spoken} shown.`);
    // The reply's element is another one now: the focus goes to its same control (or the
    // other one, at an end).
    const item = $("messages").querySelector(`:scope > li[data-id="${body.id}"]`);
    const again = item?.querySelector(`[data-tool="${tool}"]:not(:disabled)`);
    (again ?? item?.querySelector(".variants button:not(:disabled)"))?.focus();
  } catch (err) {
    if (err.status !== 401) notify(err instanceof ApiError ? toolFailure(err, "Showing that reply") : String(err));
    if (err.code === "message_not_found") delete state.variants[shown.reply_to];
  }
}

// --- edit in place ------------------------------------------------------------------------

/** The edit form of `message` in `item` while it is being edited (else none); true while it is. */
export function renderEditing(item, message) {
  let form = item.querySelector(":scope > form.edit-form");
  if (state.editing !== message.id) {
    form?.remove();
    return false;
  }
  if (form) return true;
  form = document.createElement("form");
  form.className = "edit-form";
  const id = `edit-${message.id}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.className = "visually-hidden";
  label.textContent = "Edit your message";
  const box = document.createElement("textarea");
  box.id = id;
  box.rows = 3;
  box.maxLength = 8000;
  box.required = true;
  box.value = message.content;
  const hintId = `${id}-hint`;
  const hint = document.createElement("p");
  hint.id = hintId;
  hint.className = "hint";
  hint.textContent = "The avatar answers it again; its earlier replies stay as alternatives. Escape cancels.";
  box.setAttribute("aria-describedby", hintId);
  const actions = document.createElement("div");
  actions.className = "row edit-actions";
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Save and resend";
  const cancel = button("Cancel", { tool: "cancel-edit", onClick: () => stopEditing(message.id) });
  actions.append(save, cancel);
  form.append(label, box, hint, actions);
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      stopEditing(message.id);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = box.value.trim();
    if (!content || save.disabled) return;
    if (content === message.content) {
      stopEditing(message.id);
      return;
    }
    save.disabled = true;
    box.readOnly = true;
    const taken = await editMessage(message, content, {
      onAccepted: () => {
        if (state.editing === message.id) state.editing = null;
        renderMessageById(message.id);
      },
    });
    if (!taken && form.isConnected) {
      // Refused (moderation, not the latest any more): the text typed is kept.
      save.disabled = false;
      box.readOnly = false;
      box.focus();
    }
  });
  item.append(form);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  return true;
}

function stopEditing(id) {
  state.editing = null;
  renderMessageById(id);
  $("messages").querySelector(`:scope > li[data-id="${id}"] [data-tool="edit"]`)?.focus();
}

// --- delete -------------------------------------------------------------------------------

function askToDelete(message) {
  const question = deleteQuestion(message);
  const dialog = $("delete-dialog");
  $("delete-title").textContent = question.title;
  $("delete-text").textContent = question.text;
  dialog.dataset.id = message.id;
  dialog.returnValue = "";
  dialog.showModal();
  $("delete-cancel").focus(); // the safe choice first
}

async function deleteMessage(id) {
  const message = findMessage(state.messages, id);
  if (!message || !state.conversation) return;
  const conversationId = state.conversation.id;
  clearNotice();
  try {
    await state.api.json("DELETE", `/conversations/${conversationId}/messages/${message.id}`);
  } catch (err) {
    if (err.status !== 401) notify(toolFailure(err, "Deleting the message"));
    return;
  }
  if (state.conversation?.id !== conversationId) return;
  state.messages = withoutDeleted(state.messages, message);
  if (state.lastSend?.userMessageId === message.id) state.lastSend = null;
  if (state.editing === message.id) state.editing = null;
  if (message.role === "user") delete state.variants[message.id];
  else if (message.is_current !== false && message.reply_to) await showCurrentAfterDelete(message);
  renderMessages();
  announce(message.role === "user" ? "Your message was deleted." : "The reply was deleted.");
  $("composer-input").focus();
}

/** A reply deleted: the latest of its alternatives, if any, is current now; show it. */
async function showCurrentAfterDelete(reply) {
  const known = state.variants[reply.reply_to];
  delete state.variants[reply.reply_to];
  if (!(reply.variant > 0 || (known?.items?.length ?? 0) > 1)) return; // it was the only one
  try {
    const { body } = await state.api.get(`/conversations/${state.conversation.id}/messages/${reply.reply_to}/variants`);
    state.variants[reply.reply_to] = { ...body, asked: body.current_id };
    const current = body.items.find((item) => item.id === body.current_id);
    if (current) state.messages = upsertMessage(state.messages, current);
  } catch {
    // shown after the next reload
  }
}

/** The delete confirmation: a modal <dialog> like the page's others (built here, once). */
function buildDeleteDialog() {
  const dialog = document.createElement("dialog");
  dialog.id = "delete-dialog";
  dialog.className = "dialog";
  dialog.setAttribute("aria-labelledby", "delete-title");
  dialog.setAttribute("aria-describedby", "delete-text");
  const form = document.createElement("form");
  form.id = "delete-form";
  form.className = "stack";
  const title = document.createElement("h2");
  title.id = "delete-title";
  const text = document.createElement("p");
  text.id = "delete-text";
  text.className = "hint";
  const actions = document.createElement("div");
  actions.className = "row dialog-actions";
  const confirm = document.createElement("button");
  confirm.id = "delete-confirm";
  confirm.type = "submit";
  confirm.className = "danger";
  confirm.textContent = "Delete";
  const cancel = document.createElement("button");
  cancel.id = "delete-cancel";
  cancel.type = "button";
  cancel.className = "secondary";
  cancel.textContent = "Cancel";
  actions.append(confirm, cancel);
  form.append(title, text, actions);
  dialog.append(form);
  document.body.append(dialog);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = dialog.dataset.id;
    dialog.close("delete");
    deleteMessage(id);
  });
  cancel.addEventListener("click", () => dialog.close());
}

export function wireMessageTools() {
  buildDeleteDialog();
  // The avatar panel renewed (or removed) the image: the replies show it as it is now.
  document.addEventListener("avatar-image", () => renderAll());
}
