// The sign-in view (dev, Supabase Auth, or none: auth.js does the signing in) and what
// follows it: the personalities, the avatar (or creating one), then the chat.

import { clearImage } from "./avatarimage.js";
import { abortStream } from "./chat.js";
import { openChat } from "./conversations.js";
import { $, busy, show } from "./dom.js";
import { clearUsage } from "./meter.js";
import { clearNotice, describe, notify } from "./notice.js";
import { loadAvatar, loadPersonalities } from "./persona.js";
import { state } from "./state.js";

export async function signedOut(message = "") {
  await state.auth.signOut();
  showSignIn(message);
}

export function showSignIn(message = "") {
  abortStream();
  clearUsage();
  state.avatar = null;
  clearImage();
  state.conversation = null;
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  $("account-menu").open = false;
  $("account").hidden = true;
  $("sign-in-message").textContent = message;
  $("dev-sign-in").hidden = state.auth.mode !== "dev";
  $("supabase-sign-in").hidden = state.auth.mode !== "supabase";
  $("no-sign-in").hidden = state.auth.mode !== "none";
  show("view-sign-in", "sign-in-title");
  const first = state.auth.mode === "dev" ? "dev-email" : state.auth.mode === "supabase" ? "sb-email" : null;
  if (first) $(first).focus();
}

export function wireSignIn() {
  $("dev-sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt("dev-sign-in-submit", "Signing in", async () => {
      await state.auth.signInDev($("dev-email").value.trim());
      clearNotice();
      await start();
    });
  });
  $("supabase-sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    attempt("sb-sign-in", "Signing in", async () => {
      await state.auth.signInWithPassword($("sb-email").value.trim(), $("sb-password").value);
      clearNotice();
      await start();
    });
  });
  $("sb-sign-up").addEventListener("click", () => {
    if (!$("supabase-sign-in").reportValidity()) return;
    attempt("sb-sign-up", "Creating the account", async () => {
      const signedIn = await state.auth.signUp($("sb-email").value.trim(), $("sb-password").value);
      if (signedIn) await start();
      else notify("Check your email to confirm the account, then sign in.", { kind: "info" });
    });
  });
  $("sb-magic-link").addEventListener("click", () => {
    if (!$("sb-email").reportValidity()) return;
    attempt("sb-magic-link", "Sending the link", async () => {
      await state.auth.sendMagicLink($("sb-email").value.trim());
      notify("We sent you a sign-in link: open it on this device.", { kind: "info" });
    });
  });
  $("sign-out").addEventListener("click", () => signedOut("You are signed out."));
}

/** Runs `work` with the button `buttonId` busy; a failure is told as what was `doing`. */
function attempt(buttonId, doing, work) {
  busy($(buttonId), async () => {
    try {
      await work();
    } catch (err) {
      notify(describe(err, doing));
    }
  });
}

/** Signed in (or not): the avatar's view, the creation of one, or the sign-in. */
export async function start() {
  const session = await state.auth.session();
  if (!session) return signedOut();
  $("account").hidden = false;
  $("account-email").textContent = session.email;
  $("account-menu-email").textContent = session.email;
  show("view-loading");
  try {
    await loadPersonalities();
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
