// The avatar-chat web client: plain ES modules, no build step, on the documented API.

import { Api, ApiError, newKey } from "./api.js";
import { createAuth } from "./auth.js";

const PERSONALITIES = ["friendly", "professional", "playful", "caring", "witty"];
const PROGRESS_PREFIX = "avatar-chat.progress."; // sessionStorage: a streaming reply's text and last event id
const PAGE = 50;

const $ = (id) => document.getElementById(id);

const state = {
  auth: null,
  api: null,
  avatar: null,
  etag: null,
  conversations: [],
  nextCursor: null,
  conversation: null,
  messages: [], // the current conversation's, by seq
  hasEarlier: false,
  streaming: null, // {replyId, controller} while a reply streams in
  lastSend: null, // {conversationId, content, key, userMessageId}: what Retry resends
  countdown: null,
};

// --- small view helpers ------------------------------------------------------------------

function show(viewId, focusId) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== viewId;
  if (focusId) $(focusId).focus();
}

let retryAction = null;

function notify(text, { retry = null, kind = "error" } = {}) {
  const notice = $("notice");
  notice.dataset.kind = kind;
  notice.setAttribute("role", kind === "error" ? "alert" : "status");
  $("notice-text").textContent = text;
  retryAction = retry;
  $("notice-retry").hidden = !retry;
  $("notice-retry").disabled = false;
  notice.hidden = false;
}

function clearNotice() {
  stopCountdown();
  $("notice").hidden = true;
  retryAction = null;
}

function announce(text) {
  $("chat-status").textContent = text;
}

function stopCountdown() {
  if (state.countdown === null) return;
  clearInterval(state.countdown);
  state.countdown = null;
  $("send").disabled = Boolean(state.streaming);
}

/** A readable sentence for any failure; `what` says what was being done. */
function describe(err, what) {
  if (err instanceof ApiError) {
    if (err.status === 0) return err.message;
    return `${what} failed: ${err.message}`;
  }
  return `${what} failed: ${err?.message || err}`;
}

// --- signing in --------------------------------------------------------------------------

async function signedOut(message = "") {
  await state.auth.signOut();
  showSignIn(message);
}

function showSignIn(message = "") {
  abortStream();
  state.avatar = null;
  state.conversation = null;
  $("account").hidden = true;
  $("sign-in-message").textContent = message;
  $("dev-sign-in").hidden = state.auth.mode !== "dev";
  $("supabase-sign-in").hidden = state.auth.mode !== "supabase";
  $("no-sign-in").hidden = state.auth.mode !== "none";
  show("view-sign-in", "sign-in-title");
  const first = state.auth.mode === "dev" ? "dev-email" : state.auth.mode === "supabase" ? "sb-email" : null;
  if (first) $(first).focus();
}

async function busy(button, work) {
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

function wireSignIn() {
  $("dev-sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("dev-sign-in-submit"), async () => {
      try {
        await state.auth.signInDev($("dev-email").value.trim());
        clearNotice();
        await start();
      } catch (err) {
        notify(describe(err, "Signing in"));
      }
    });
  });
  $("supabase-sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("sb-sign-in"), async () => {
      try {
        await state.auth.signInWithPassword($("sb-email").value.trim(), $("sb-password").value);
        clearNotice();
        await start();
      } catch (err) {
        notify(describe(err, "Signing in"));
      }
    });
  });
  $("sb-sign-up").addEventListener("click", () => {
    if (!$("supabase-sign-in").reportValidity()) return;
    busy($("sb-sign-up"), async () => {
      try {
        const signedIn = await state.auth.signUp($("sb-email").value.trim(), $("sb-password").value);
        if (signedIn) await start();
        else notify("Check your email to confirm the account, then sign in.", { kind: "info" });
      } catch (err) {
        notify(describe(err, "Creating the account"));
      }
    });
  });
  $("sb-magic-link").addEventListener("click", () => {
    if (!$("sb-email").reportValidity()) return;
    busy($("sb-magic-link"), async () => {
      try {
        await state.auth.sendMagicLink($("sb-email").value.trim());
        notify("We sent you a sign-in link: open it on this device.", { kind: "info" });
      } catch (err) {
        notify(describe(err, "Sending the link"));
      }
    });
  });
  $("sign-out").addEventListener("click", () => signedOut("You are signed out."));
}

// --- the avatar ----------------------------------------------------------------------------

function fillPersonalities(select, selected) {
  select.replaceChildren(
    ...PERSONALITIES.map((p) => {
      const option = new Option(p[0].toUpperCase() + p.slice(1), p);
      option.selected = p === selected;
      return option;
    }),
  );
}

function setAvatar(avatar, response) {
  state.avatar = avatar;
  state.etag = response?.headers.get("ETag") ?? `"${avatar.version}"`;
  $("avatar-name-heading").textContent = avatar.name;
  $("avatar-version").textContent = String(avatar.version);
  fillPersonalities($("persona"), avatar.personality);
}

/** The signed-in user's avatar, or null when they have none yet. */
async function loadAvatar() {
  try {
    const { body, response } = await state.api.get("/avatars/me");
    setAvatar(body, response);
    return body;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

function wireAvatar() {
  fillPersonalities($("avatar-personality"), "friendly");
  $("create-avatar").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("create-avatar-submit"), async () => {
      const body = {
        name: $("avatar-name").value.trim(),
        personality: $("avatar-personality").value,
      };
      const backstory = $("avatar-backstory").value.trim();
      if (backstory) body.backstory = backstory;
      try {
        const { body: avatar, response } = await state.api.post("/avatars/me", body);
        setAvatar(avatar, response);
        clearNotice();
        await openChat();
      } catch (err) {
        if (err instanceof ApiError && err.code === "avatar_exists") return start();
        if (err.status !== 401) notify(describe(err, "Creating the avatar"));
      }
    });
  });

  $("persona").addEventListener("change", async () => {
    const select = $("persona");
    const personality = select.value;
    select.disabled = true;
    $("persona-status").textContent = "Switching…";
    try {
      const { body, response } = await state.api.patch(
        "/avatars/me/persona",
        { personality },
        { headers: { "If-Match": state.etag } },
      );
      setAvatar(body, response);
      $("persona-status").textContent = `Now ${body.personality} (version ${body.version}); the next reply uses it.`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        await loadAvatar().catch(() => {});
        $("persona-status").textContent = "";
        notify("Your avatar was changed elsewhere; this shows it as it is now. Choose again.", { kind: "info" });
      } else {
        fillPersonalities(select, state.avatar?.personality);
        $("persona-status").textContent = "";
        if (err.status !== 401) notify(describe(err, "Switching the persona"));
      }
    } finally {
      select.disabled = false;
    }
  });
}

// --- conversations ---------------------------------------------------------------------------

function conversationLabel(c) {
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

async function loadConversations({ more = false } = {}) {
  const cursor = more && state.nextCursor ? `&cursor=${encodeURIComponent(state.nextCursor)}` : "";
  const { body } = await state.api.get(`/conversations?limit=20${cursor}`);
  state.conversations = more ? [...state.conversations, ...body.items] : body.items;
  state.nextCursor = body.next_cursor;
  renderConversations();
}

async function newConversation() {
  const { body } = await state.api.post("/conversations", { mode: "companion" });
  state.conversations = [body, ...state.conversations.filter((c) => c.id !== body.id)];
  return body;
}

function wireConversations() {
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

async function openConversation(conversation) {
  abortStream();
  state.conversation = conversation;
  if (conversationIdFromHash() !== conversation.id) history.replaceState(null, "", `#/c/${conversation.id}`);
  $("chat-title").textContent = conversationLabel(conversation);
  renderConversations();
  state.messages = [];
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

// --- messages ----------------------------------------------------------------------------------

const STATUS_TEXT = {
  streaming: "replying…",
  stopped: "stopped",
  failed: "failed",
  interrupted: "interrupted",
};

function upsert(message) {
  const at = state.messages.findIndex((m) => m.id === message.id);
  if (at >= 0) state.messages[at] = { ...state.messages[at], ...message };
  else {
    state.messages.push(message);
    state.messages.sort((a, b) => a.seq - b.seq);
  }
  // Only the current alternative of a reply is shown (a regenerated one replaces it).
  if (message.role === "assistant" && message.is_current !== false && message.reply_to) {
    state.messages = state.messages.filter(
      (m) => m.id === message.id || m.role !== "assistant" || m.reply_to !== message.reply_to,
    );
  }
  renderMessage(state.messages.find((m) => m.id === message.id));
}

function latestReply() {
  for (let i = state.messages.length - 1; i >= 0; i--) {
    if (state.messages[i].role === "assistant") return state.messages[i];
  }
  return null;
}

function renderMessages() {
  const list = $("messages");
  list.replaceChildren();
  for (const message of state.messages) renderMessage(message);
  $("earlier-messages").hidden = !state.hasEarlier;
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

function renderMessage(message) {
  if (!message) return;
  const item = messageElement(message);
  item.className = `message ${message.role}`;
  item.dataset.role = message.role;
  item.dataset.status = message.status;
  const meta = item.querySelector(".meta");
  const content = item.querySelector(".content");
  const actions = item.querySelector(".message-actions");
  meta.replaceChildren();
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.role === "user" ? "You" : state.avatar?.name || "Avatar";
  meta.append(who);
  if (message.role === "assistant") {
    if (message.personality) {
      const persona = document.createElement("span");
      persona.className = "persona";
      persona.dataset.personality = message.personality;
      persona.dataset.personaVersion = String(message.persona_version);
      persona.textContent = `${message.personality} · persona v${message.persona_version}`;
      persona.title = `Generated with the ${message.personality} persona, version ${message.persona_version}`;
      meta.append(persona);
    }
    if (STATUS_TEXT[message.status]) {
      const status = document.createElement("span");
      status.className = "status";
      status.textContent = STATUS_TEXT[message.status] + (message.error_code ? ` (${message.error_code})` : "");
      meta.append(status);
    }
  }
  content.textContent = message.content;
  item.setAttribute("aria-busy", String(message.status === "streaming"));

  actions.replaceChildren();
  const isLatest = message.role === "assistant" && latestReply()?.id === message.id;
  if (isLatest && message.status !== "streaming" && message.status !== "complete") {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = "Retry";
    retry.setAttribute("aria-label", "Retry this reply");
    retry.addEventListener("click", () => retryReply(message));
    actions.append(retry);
  }
  const streamingNow = state.messages.some((m) => m.status === "streaming");
  $("stop").hidden = !streamingNow;
  $("messages").setAttribute("aria-busy", String(streamingNow));
}

function scrollToEnd(force = false) {
  const list = $("messages");
  const near = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
  if (force || near) list.scrollTop = list.scrollHeight;
}

// A streaming reply's text and last event id, kept so that a reload resumes where it was.
function saveProgress(replyId, text, lastEventId) {
  try {
    sessionStorage.setItem(PROGRESS_PREFIX + replyId, JSON.stringify({ text, lastEventId }));
  } catch {
    // storage full or off: a reload then resumes from the start of the reply
  }
}

function loadProgress(replyId) {
  try {
    return JSON.parse(sessionStorage.getItem(PROGRESS_PREFIX + replyId) || "null");
  } catch {
    return null;
  }
}

function dropProgress(replyId) {
  sessionStorage.removeItem(PROGRESS_PREFIX + replyId);
}

// --- streaming a reply in --------------------------------------------------------------------

function abortStream() {
  state.streaming?.controller.abort();
  state.streaming = null;
}

/** Reads a send's (or regenerate's, or resume's) events into the view; the reply's final state. */
async function consume(events, conversationId, { replyId = null, lastEventId = null } = {}) {
  let reply = replyId ? state.messages.find((m) => m.id === replyId) : null;
  let last = lastEventId;
  for await (const { event, data, id } of events) {
    if (state.conversation?.id !== conversationId) return null; // the user went elsewhere
    if (id !== null) last = id;
    if (event === "user_message") {
      upsert(data);
      if (state.lastSend && !state.lastSend.userMessageId) state.lastSend.userMessageId = data.id;
    } else if (event === "assistant_message") {
      reply = { ...data };
      upsert(reply);
      if (state.streaming) state.streaming.replyId = reply.id;
      announce(`${state.avatar?.name || "The avatar"} is replying.`);
    } else if (event === "reset") {
      if (reply) {
        reply.content = "";
        upsert(reply);
      }
    } else if (event === "delta") {
      if (!reply) {
        // A replayed send announces no reply: show the text until `done` names it.
        reply = { id: "pending-" + newKey(), role: "assistant", seq: Number.MAX_SAFE_INTEGER, content: "", status: "streaming" };
      }
      reply.content += data.content;
      reply.status = "streaming";
      upsert(reply);
      if (!reply.id.startsWith("pending-")) saveProgress(reply.id, reply.content, last);
      scrollToEnd();
    } else if (event === "done") {
      if (reply && reply.id !== data.id) state.messages = state.messages.filter((m) => m.id !== reply.id);
      reply = data;
      upsert(data);
      dropProgress(data.id);
      announce(`${state.avatar?.name || "The avatar"} replied.`);
      return data;
    } else if (event === "error") {
      const id = data.details?.assistant_message_id || reply?.id;
      const failed = state.messages.find((m) => m.id === id);
      if (failed) {
        const status = data.details?.status || "failed";
        upsert({ ...failed, status, error_code: data.code });
        dropProgress(id);
      }
      notify(`The reply did not complete: ${data.message}`, { retry: failed ? () => retryReply(failed) : null });
      return null;
    }
  }
  // Neither `done` nor `error`: the connection was cut (a proxy, a server restart).
  throw new ApiError(0, "stream_cut", "The connection closed before the reply was complete.");
}

function setComposerBusy(isBusy) {
  $("send").disabled = isBusy || state.countdown !== null; // a 429's wait holds Send back too
  $("composer-input").readOnly = isBusy;
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
    if (state.streaming?.replyId) {
      // The stream broke after the reply began: follow it from where it was.
      const reply = state.messages.find((m) => m.id === state.streaming.replyId);
      if (reply) {
        await resume(reply);
        return;
      }
    }
    failedSend(err, content, key);
  } finally {
    if (state.streaming?.controller === controller) state.streaming = null;
    setComposerBusy(false);
    renderMessage(latestReply());
  }
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
    waitThenAllowRetry(err, () => send(content, key));
    return;
  }
  notify(describe(err, "Sending"), { retry: () => send(content, key) });
}

/** 429: say so, count Retry-After down with Send held back, then offer the retry. */
function waitThenAllowRetry(err, retry) {
  let left = Math.max(1, err.retryAfter ?? 5);
  const reason = err.code === "too_many_streams" ? "Too many replies are being written at once" : "You are sending too fast";
  const tick = () => {
    $("notice-text").textContent = left > 0
      ? `${reason}. You can try again in ${left} s.`
      : `${reason}. You can try again now.`;
    $("notice-retry").disabled = left > 0;
    $("send").disabled = left > 0;
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

/** A reply being generated (after a reload, or a broken stream): follow it to its end. */
async function resume(reply, attempt = 1) {
  const conversationId = state.conversation.id;
  const progress = loadProgress(reply.id);
  const headers = {};
  if (progress?.lastEventId) {
    headers["Last-Event-ID"] = progress.lastEventId;
    upsert({ ...reply, content: progress.text, status: "streaming" });
  } else {
    upsert({ ...reply, content: "", status: "streaming" }); // the stream starts from the beginning
  }
  const controller = new AbortController();
  state.streaming = { controller, replyId: reply.id };
  setComposerBusy(true);
  try {
    const events = state.api.events("GET", `/conversations/${conversationId}/messages/${reply.id}/stream`, {
      headers,
      signal: controller.signal,
    });
    const done = await consume(events, conversationId, {
      replyId: reply.id,
      lastEventId: progress?.lastEventId ?? null,
    });
    if (done) afterReply(state.conversation);
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.status !== 0) {
      if (err.status !== 401) notify(describe(err, "Following the reply"));
      return;
    }
    if (attempt < 5) {
      await new Promise((r) => setTimeout(r, 1000 * attempt));
      const current = state.messages.find((m) => m.id === reply.id);
      if (current && state.conversation?.id === conversationId) return resume(current, attempt + 1);
    }
    notify(describe(err, "Following the reply"), { retry: () => resume(reply) });
  } finally {
    if (state.streaming?.controller === controller) state.streaming = null;
    setComposerBusy(false);
    renderMessage(latestReply());
  }
}

function afterReply(conversation) {
  // The title is set after the first reply (post-commit work): refresh the list quietly.
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

async function stopReply() {
  const reply = state.messages.find((m) => m.status === "streaming");
  if (!reply || reply.id.startsWith("pending-")) return;
  $("stop").disabled = true;
  try {
    const { body } = await state.api.post(`/conversations/${state.conversation.id}/messages/${reply.id}/stop`);
    abortStream();
    upsert(body);
    dropProgress(body.id);
    announce("Reply stopped.");
  } catch (err) {
    if (err.status !== 401) notify(describe(err, "Stopping the reply"));
  } finally {
    $("stop").disabled = false;
  }
}

/** Retry a reply that did not complete: the same send again (same Idempotency-Key) when
 * this page sent it, else another reply to the same message (regenerate). */
async function retryReply(reply) {
  clearNotice();
  const last = state.lastSend;
  if (
    last &&
    last.conversationId === state.conversation?.id &&
    last.userMessageId === reply.reply_to &&
    reply.status !== "stopped"
  ) {
    return send(last.content, last.key);
  }
  const conversationId = state.conversation.id;
  const controller = new AbortController();
  state.streaming = { controller, replyId: null };
  setComposerBusy(true);
  try {
    const events = state.api.events("POST", `/conversations/${conversationId}/messages/${reply.id}/regenerate`, {
      headers: { "Idempotency-Key": newKey() },
      signal: controller.signal,
    });
    await consume(events, conversationId);
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err instanceof ApiError && err.status === 429) waitThenAllowRetry(err, () => retryReply(reply));
    else if (err.status !== 401) notify(describe(err, "Retrying"), { retry: () => retryReply(reply) });
  } finally {
    if (state.streaming?.controller === controller) state.streaming = null;
    setComposerBusy(false);
    renderMessage(latestReply());
  }
}

function wireComposer() {
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
    const action = retryAction;
    clearNotice();
    action?.();
  });
  $("notice-dismiss").addEventListener("click", clearNotice);
}

// --- start -----------------------------------------------------------------------------------

async function openChat() {
  show("view-chat");
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

async function start() {
  const session = await state.auth.session();
  if (!session) return signedOut();
  $("account").hidden = false;
  $("account-email").textContent = session.email;
  show("view-loading");
  try {
    const avatar = await loadAvatar();
    if (!avatar) {
      show("view-create-avatar", "create-avatar-title");
      return;
    }
    await openChat();
  } catch (err) {
    if (err.status === 401) return;
    notify(describe(err, "Loading"), { retry: start });
  }
}

async function main() {
  let config;
  try {
    const response = await fetch("./config.json", { cache: "no-store" });
    config = await response.json();
  } catch {
    notify("Cannot reach the server. Reload the page to try again.");
    return;
  }
  try {
    state.auth = await createAuth(config);
  } catch (err) {
    notify(describe(err, "Loading the sign-in"));
    return;
  }
  state.api = new Api({
    token: () => state.auth.token(),
    onUnauthorized: (err) => {
      signedOut(`Please sign in again: ${err.message}`);
    },
    onRetry: (err, seconds) => {
      notify(`${err.message} Trying again in ${seconds} s…`, { kind: "retrying" });
    },
    onRecovered: () => {
      if ($("notice").dataset.kind === "retrying") clearNotice();
    },
  });
  state.auth.onSignedOut?.(() => showSignIn("You are signed out."));
  wireSignIn();
  wireAvatar();
  wireConversations();
  wireComposer();
  const panel = $("conversations-panel");
  const wide = matchMedia("(min-width: 48rem)");
  panel.open = wide.matches;
  await start();
}

main();
