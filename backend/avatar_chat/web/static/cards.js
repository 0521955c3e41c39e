// The avatar as a character card (Character Card V2): "Export as character card" saves
// GET /avatars/me/card?format=png (the card in the PNG) as "<name>.png", "Export as JSON"
// the card itself; "Create from character card…" (in the avatar panel, and on the screen
// that creates one) sends a card's file to POST /avatars/me/card, with If-Match from the
// ETag when it replaces the avatar (a 412 shows the avatar as it is now). portability.js
// words what they say.

import { ApiError } from "./api.js";
import { openChat } from "./conversations.js";
import { $, busy, dialogMessage, saveFile } from "./dom.js";
import { clearNotice, describe, notify } from "./notice.js";
import { loadAvatar, setAvatar } from "./persona.js";
import { cardContentType, cardFailure, cardFilename, cardReplaceWarning } from "./portability.js";
import { state } from "./state.js";

function closeCardMenu() {
  const menu = $("card-menu");
  if (menu.open) {
    menu.open = false;
    menu.querySelector("summary").focus();
  }
}

async function exportCard(format) {
  const png = format === "png";
  const status = $("persona-status");
  status.textContent = "Preparing the character card…";
  try {
    const response = await state.api.fetch("GET", png ? "/avatars/me/card?format=png" : "/avatars/me/card", {
      accept: png ? "image/png" : "application/json",
    });
    const name = cardFilename(state.avatar?.name, png ? "png" : "json");
    saveFile(await response.blob(), name);
    status.textContent = `The character card was saved as ${name}.`;
  } catch (err) {
    status.textContent = "";
    if (err.status !== 401) notify(describe(err, "Exporting the character card"));
  }
}

const cardMessage = (text, kind) => dialogMessage("card-message", text, kind);

/** What the dialog says about the avatar there is (it is replaced) or is not (one is made). */
function showReplacing() {
  const warning = cardReplaceWarning(state.avatar?.name);
  $("card-replace-warning").textContent = warning ?? "";
  $("card-replace-warning").hidden = !warning;
  $("card-submit").textContent = warning ? "Replace my avatar" : "Create avatar";
}

function openCardDialog() {
  $("card-form").reset();
  cardMessage("");
  showReplacing();
  $("card-dialog").showModal();
  $("card-file").focus();
}

async function createFromCard() {
  const file = $("card-file").files[0];
  if (!file) {
    cardMessage("Choose a character card: a .png or a .json file.", "error");
    $("card-file").focus();
    return;
  }
  const contentType = cardContentType(file.name, file.type);
  if (!contentType) {
    cardMessage("Choose a character card: a .png with a card in it, or a .json.", "error");
    return;
  }
  const replacing = Boolean(state.avatar);
  cardMessage(`Reading ${file.name}…`);
  try {
    const headers = replacing ? { "If-Match": state.etag } : {};
    const { body, response } = await state.api.upload("/avatars/me/card", file, contentType, { headers });
    setAvatar(body, response);
    $("card-dialog").close();
    clearNotice();
    if ($("view-chat").hidden) {
      await openChat(); // made from the card on the screen that creates one
      return;
    }
    $("persona-status").textContent = `Now ${body.name}, from the card (version ${body.version}).`;
  } catch (err) {
    if (err.status === 401) return;
    if (err instanceof ApiError && err.code === "avatar_not_found" && replacing) {
      // Deleted elsewhere: the card makes a new one.
      state.avatar = null;
      showReplacing();
      cardMessage("Your avatar was deleted elsewhere. Send the card again to create one from it.", "error");
      return;
    }
    if (err instanceof ApiError && (err.status === 412 || err.code === "avatar_exists")) {
      // Changed (or made) elsewhere: show it as it is now, and ask again.
      await loadAvatar().catch(() => {});
      showReplacing();
      cardMessage(
        "Your avatar was changed elsewhere; this shows it as it is now. Send the card again to replace it.",
        "error",
      );
      return;
    }
    cardMessage(cardFailure(err), "error");
  }
}

export function wireCards() {
  const menu = $("card-menu");
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) {
      event.preventDefault();
      closeCardMenu();
    }
  });
  $("export-card").addEventListener("click", () => busy($("export-card"), () => exportCard("png")));
  $("export-card-json").addEventListener("click", () => busy($("export-card-json"), () => exportCard("json")));
  $("card-from-file").addEventListener("click", openCardDialog);
  $("create-from-card").addEventListener("click", openCardDialog);
  $("card-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("card-submit"), createFromCard);
  });
  $("card-close").addEventListener("click", () => $("card-dialog").close());
}
