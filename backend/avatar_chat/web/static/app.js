// The avatar-chat web client: plain ES modules, no build step, on the documented API.
// This module starts the page; the rest is one module per part of it:
//   state.js          the one state object
//   api.js, sse.js    HTTP calls and the event-stream format; retry.js: when to try again
//   auth.js, signin.js  signing in, and what follows it
//   persona.js        the avatar and its persona (personalities.js: from GET /openapi.json)
//   avatarimage.js    the avatar's image: shown (signed URLs renewed before they expire:
//                     imagerenewal.js, pure), uploaded from a file or the camera, removed
//   history.js        the persona history: versions, what changed (personadiff.js, pure), restore
//   cards.js          the avatar as a character card: export it, create one from it
//   account.js        the account menu: export all my data, import an archive
//                     (portability.js: file names, what an import did, errors; pure);
//                     deleteaccount.js: delete my account (avatarwords.js: what the avatar
//                     panel and the account say; pure)
//   conversations.js  the list, opening one, earlier messages
//   render.js         the messages as shown (messages.js: the list, pure; messageview.js:
//                     what one message shows, safety notices included, pure)
//   chat.js           send, follow, stop, retry, regenerate, edit (stream.js: the events,
//                     as a reducer; progress.js: a streaming reply's progress, for a reload)
//   messagetools.js   the tools on the messages: Regenerate, ‹ 2/3 › between alternative
//                     replies, Edit, Delete, the persona button, the avatar's image
//                     (exchanges.js: which, and what they say; pure)
//   meter.js          the usage meter (usage.js: what it shows, and what a used-up
//                     quota says, pure)
//   notice.js, dom.js errors and statuses; small view helpers
// The pure modules (sse, retry, messages, messageview, stream, progress, personalities,
// usage, portability, exchanges, imagerenewal, personadiff, avatarwords) are tested in
// Node: tests/web/js/.

import { wireAccount } from "./account.js";
import { Api } from "./api.js";
import { createAuth } from "./auth.js";
import { wireImage } from "./avatarimage.js";
import { wireCards } from "./cards.js";
import { wireComposer } from "./chat.js";
import { wireConversations } from "./conversations.js";
import { wireDeleteAccount } from "./deleteaccount.js";
import { $ } from "./dom.js";
import { wireHistory } from "./history.js";
import { wireMessageTools } from "./messagetools.js";
import { clearNotice, describe, notify } from "./notice.js";
import { wireAvatar } from "./persona.js";
import { showSignIn, signedOut, start, wireSignIn } from "./signin.js";
import { state } from "./state.js";

/** The operator's suitability notice (config.json `suitability_notice`, null: none), shown
 * on the sign-in screen and under the composer. */
function showSuitability(text) {
  for (const id of ["suitability-sign-in", "suitability-chat"]) {
    $(id).textContent = text || "";
    $(id).hidden = !text;
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
  showSuitability(config.suitability_notice);
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
  wireImage();
  wireHistory();
  wireCards();
  wireAccount();
  wireDeleteAccount();
  wireConversations();
  wireComposer();
  wireMessageTools();
  const panel = $("conversations-panel");
  const wide = matchMedia("(min-width: 48rem)");
  panel.open = wide.matches;
  await start();
}

main();
