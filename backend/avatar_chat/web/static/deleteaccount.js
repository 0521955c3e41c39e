// "Delete my account…" (the account menu): a dialog that names what goes (the avatar and
// its image and history, every conversation and message, the usage records, the account
// itself), then DELETE /me and back to the sign-in. A 503 (storage_unavailable,
// auth_unavailable; retried by itself first, as every 503) may have left part of it done:
// the dialog says so and offers "Finish deleting" (the same request again; it answers 204
// once everything is gone). avatarwords.js words it.

import { deleteAccountFailure, deletionList } from "./avatarwords.js";
import { $, busy, dialogMessage } from "./dom.js";
import { signedOut } from "./signin.js";
import { state } from "./state.js";

const deleteMessage = (text, kind) => dialogMessage("delete-account-message", text, kind);

function openDeleteAccount() {
  const menu = $("account-menu");
  menu.open = false;
  $("delete-account-list").replaceChildren(
    ...deletionList(state.avatar?.name).map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }),
  );
  deleteMessage("");
  $("delete-account-submit").textContent = "Delete my account";
  $("delete-account-dialog").showModal();
  $("delete-account-cancel").focus(); // the safe choice first
}

async function deleteAccount() {
  deleteMessage("Deleting your account…");
  try {
    await state.api.json("DELETE", "/me", { accept: "application/json" });
  } catch (err) {
    if (err.status === 401) return; // back at the sign-in already
    const failure = deleteAccountFailure(err);
    deleteMessage(failure.text, "error");
    if (failure.finish) $("delete-account-submit").textContent = "Finish deleting";
    return;
  }
  $("delete-account-dialog").close();
  await signedOut("Your account was deleted, with your avatar, conversations and usage.");
}

export function wireDeleteAccount() {
  $("delete-account").addEventListener("click", openDeleteAccount);
  $("delete-account-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("delete-account-submit"), deleteAccount);
  });
  $("delete-account-cancel").addEventListener("click", () => $("delete-account-dialog").close());
  $("delete-account-dialog").addEventListener("close", () => {
    setTimeout(() => {
      if (document.activeElement === document.body && !$("account").hidden) {
        $("account-menu").querySelector("summary").focus();
      }
    });
  });
}
