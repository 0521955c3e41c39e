// What the avatar panel and the account say when something is refused or fails: an image
// upload or removal, a restore, deleting the account; and what deleting the account
// deletes. The API's own message comes first, as it words it, with what to do next when
// it does not say. Pure: no DOM, no network, so that Node's test runner reads it too
// (tests/web/js/avatarwords.test.mjs); avatarimage.js, history.js and deleteaccount.js show it.

import { waitPhrase } from "./portability.js";

/** `text` as a sentence (a full stop added when it has none). */
function sentence(text) {
  const t = String(text ?? "").trim();
  return !t || /[.!?…]$/.test(t) ? t : `${t}.`;
}

const retryAfterOf = (err) => err?.retryAfter ?? err?.details?.retry_after ?? null;

/** A 412 on any avatar write: the page reads the avatar again and says this. */
export function changedElsewhere(again) {
  return `Your avatar was changed elsewhere; this shows it as it is now. ${again}`;
}

/**
 * What a refused or failed image upload (PUT /avatars/me/image) or removal (DELETE)
 * says, and whether the same file may be sent again as it is (`retry`). A 412 is told by
 * the caller (changedElsewhere), once it has read the avatar again.
 * @returns {{text: string, retry: boolean}}
 */
export function imageFailure(err, doing = "Uploading the image") {
  const message = sentence(err?.message);
  switch (err?.status) {
    case 0:
      return { text: err.message, retry: true };
    case 412:
      return { text: changedElsewhere("Send the image again."), retry: true };
    case 413:
      return { text: `${message} Choose a smaller image.`, retry: false };
    case 415:
      return { text: message || "Choose a PNG, JPEG or WebP image.", retry: false };
    case 422: {
      const next = err.code === "image_too_many_pixels" ? "Choose a smaller image." : "Choose another image.";
      return { text: `${message} ${next}`, retry: false };
    }
    case 429: {
      const wait = waitPhrase(retryAfterOf(err));
      return { text: `${message}${wait ? ` You can upload again ${wait}.` : ""}`, retry: true };
    }
    case 503: {
      // Retried by itself (api.js) before it is shown: still busy, or Storage still away.
      const wait = waitPhrase(retryAfterOf(err));
      return { text: `${message}${wait ? ` Try again ${wait}.` : ""}`, retry: true };
    }
    default:
      return { text: `${doing} failed: ${message}`, retry: err?.status >= 500 };
  }
}

/** What a refused restore (POST /avatars/me/restore/{version}) says; a 412 is told by
 * the caller (restoreChangedMeanwhile). */
export function restoreFailure(err, version) {
  if (err?.status === 0) return err.message;
  if (err?.code === "avatar_version_not_found") {
    return `Version ${version} is not in your avatar's history any more. ${sentence(err.message)}`;
  }
  return `Restoring version ${version} failed: ${sentence(err?.message)}`;
}

/** A 412 on a restore: the avatar changed meanwhile (it is shown as it is now). */
export function restoreChangedMeanwhile(version, current) {
  return (
    `Your avatar changed meanwhile (it is now version ${current}); nothing was restored. ` +
    `This shows it as it is now: restore version ${version} again if you still want it.`
  );
}

/** What deleting the account deletes, one item a line, the avatar named when there is one. */
export function deletionList(avatarName) {
  return [
    avatarName
      ? `Your avatar ${avatarName}, its image and every version of its persona`
      : "Your avatar, if you made one, its image and every version of its persona",
    "Every conversation and every message in them",
    "Your usage records (messages and tokens counted against your plan)",
    "Your account itself: you cannot sign in with it again",
  ];
}

/**
 * What a failed DELETE /me says, and whether "Finish deleting" is offered (a 503:
 * storage_unavailable or auth_unavailable may have left part of it done; sending it again
 * finishes it).
 * @returns {{text: string, finish: boolean}}
 */
export function deleteAccountFailure(err) {
  if (err?.status === 0) {
    return { text: `${err.message} Part of your account may already be deleted: finish deleting it.`, finish: true };
  }
  if (err?.status === 503) {
    return {
      text: `${sentence(err.message)} Part of your account may already be deleted: finish deleting it when it is back.`,
      finish: true,
    };
  }
  return { text: `Deleting your account failed: ${sentence(err?.message)}`, finish: err?.status >= 500 };
}
