// Conversations: the list (newest first, "Show older"), a new one, opening one (its latest
// page of messages, replies still streaming followed), earlier messages, #/c/<id> links.

import { abortStream, resume } from "./chat.js";
import { $, busy, show } from "./dom.js";
import { refreshUsage } from "./meter.js";
import { describe, notify } from "./notice.js";
import { renderMessages, scrollToEnd } from "./render.js";
import { PAGE, state } from "./state.js";

export function conversationLabel(c) {
  if (c.title) return c.title;
  const when = new Date(c.created_at);
  return `Conversation of ${when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" })}`;
}

function renderConversations() {
  const list = $("conversation-list");
  list.replaceChildren(
    ...state.conversations.map((c) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conversation";
      button.dataset.id = c.id;
      button.textContent = conversationLabel(c);
      if (state.conversation?.id === c.id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => openConversation(c));
      item.append(button);
      return item;
    }),
  );
  $("more-conversations").hidden = !state.nextCursor;
}

export async function loadConversations({ more = false } = {}) {
  const cursor = more && state.nextCursor ? `&cursor=${encodeURIComponent(state.nextCursor)}` : "";
  const { body } = await state.api.get(`/conversations?limit=20${cursor}`);
  state.conversations = more ? [...state.conversations, ...body.items] : body.items;
  state.nextCursor = body.next_cursor;
  renderConversations();
}

export async function newConversation() {
  const { body } = await state.api.post("/conversations", { mode: "companion" });
  state.conversations = [body, ...state.conversations.filter((c) => c.id !== body.id)];
  return body;
}

export function wireConversations() {
  $("new-conversation").addEventListener("click", () =>
    busy($("new-conversation"), async () => {
      try {
        await openConversation(await newConversation());
        $("composer-input").focus();
      } catch (err) {
        if (err.status !== 401) notify(describe(err, "Starting a conversation"));
      }
    }),
  );
  $("more-conversations").addEventListener("click", () =>
    loadConversations({ more: true }).catch((err) => notify(describe(err, "Loading conversations"))),
  );
  $("earlier-messages").addEventListener("click", () =>
    loadEarlier().catch((err) => notify(describe(err, "Loading earlier messages"))),
  );
  window.addEventListener("hashchange", () => {
    const id = conversationIdFromHash();
    if (id && id !== state.conversation?.id) {
      const known = state.conversations.find((c) => c.id === id);
      if (known) openConversation(known);
    }
  });
}

function conversationIdFromHash() {
  const match = /^#\/c\/([0-9a-f-]{36})$/.exec(location.hash);
  return match ? match[1] : null;
}

export async function openConversation(conversation) {
  abortStream();
  state.conversation = conversation;
  if (conversationIdFromHash() !== conversation.id) history.replaceState(null, "", `#/c/${conversation.id}`);
  $("chat-title").textContent = conversationLabel(conversation);
  renderConversations();
  state.messages = [];
  state.variants = {};
  state.editing = null;
  renderMessages();
  const { body } = await state.api.get(
    `/conversations/${conversation.id}/messages?before=${conversation.last_seq + 1}&limit=${PAGE}`,
  );
  if (state.conversation?.id !== conversation.id) return; // another one was opened meanwhile
  state.messages = body.items;
  state.hasEarlier = body.has_more;
  renderMessages();
  scrollToEnd(true);
  const streaming = state.messages.filter((m) => m.role === "assistant" && m.status === "streaming");
  for (const reply of streaming) resume(reply);
}

async function loadEarlier() {
  const first = state.messages[0];
  if (!first) return;
  const { body } = await state.api.get(
    `/conversations/${state.conversation.id}/messages?before=${first.seq}&limit=${PAGE}`,
  );
  state.messages = [...body.items, ...state.messages];
  state.hasEarlier = body.has_more;
  renderMessages();
}

/** After a reply: its conversation's title is set then (post-commit work), so the list
 * is refreshed quietly. */
export function afterReply(conversation) {
  loadConversations()
    .then(() => {
      const fresh = state.conversations.find((c) => c.id === conversation?.id);
      if (fresh && state.conversation?.id === fresh.id) {
        state.conversation = { ...state.conversation, ...fresh };
        $("chat-title").textContent = conversationLabel(fresh);
      }
    })
    .catch(() => {});
}

/** The chat view: the conversation the address names, else the newest, else none yet;
 * the usage meter read alongside. */
export async function openChat() {
  show("view-chat");
  refreshUsage();
  await loadConversations();
  const wanted = conversationIdFromHash();
  let conversation = state.conversations.find((c) => c.id === wanted) ?? null;
  if (!conversation && wanted) {
    try {
      conversation = (await state.api.get(`/conversations/${wanted}`)).body;
    } catch {
      conversation = null;
    }
  }
  conversation ??= state.conversations[0] ?? null;
  if (conversation) await openConversation(conversation);
  else {
    state.conversation = null;
    state.messages = [];
    renderMessages();
    $("chat-title").textContent = "New conversation";
  }
  $("composer-input").focus();
}
