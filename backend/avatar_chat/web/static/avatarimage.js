// The avatar's image: shown in the avatar panel from GET /avatars/me/image's signed URLs,
// renewed before they expire (imagerenewal.js decides when); set from a file or a phone's
// camera in the "Avatar image" dialog, previewed (an object URL) before it is sent as
// PUT /avatars/me/image (the file's bytes, its Content-Type, If-Match from the ETag); removed
// with DELETE /avatars/me/image. What a refusal says is avatarwords.js's.
//
// state.avatarImage is {url128, url512, expiresAt} or null; every change of it is told as a
// document "avatar-image" event (detail: the same), for whatever else shows the image (the
// avatar's replies). It follows the avatar: setAvatar (persona.js) calls syncImage, which
// reads the URLs again whenever the avatar's image_path is not the one shown.

import { changedElsewhere, imageFailure } from "./avatarwords.js";
import { $, busy, dialogMessage } from "./dom.js";
import { imageFromAnswer, renewalDelays, retryDelay, srcsetOf } from "./imagerenewal.js";
import { loadAvatar, setAvatar } from "./persona.js";
import { state } from "./state.js";

const IMAGE_PATH = "/avatars/me/image";

function tell() {
  document.dispatchEvent(new CustomEvent("avatar-image", { detail: state.avatarImage }));
}

/** The panel's picture: the image, or the name's initial. */
function showImage() {
  const img = $("avatar-image");
  const image = state.avatarImage;
  const name = state.avatar?.name ?? "";
  $("avatar-initial").textContent = [...name.trim()][0]?.toUpperCase() ?? "";
  if (image) {
    img.srcset = srcsetOf(image);
    img.src = image.url128;
    img.alt = name ? `Image of ${name}` : "Your avatar's image";
    img.hidden = false;
  } else {
    img.hidden = true;
    img.removeAttribute("srcset");
    img.removeAttribute("src");
    img.alt = "";
  }
}

function setImage(image) {
  const before = state.avatarImage;
  state.avatarImage = image;
  showImage();
  const same =
    before === image ||
    (before &&
      image &&
      before.url128 === image.url128 &&
      before.url512 === image.url512 &&
      before.expiresAt === image.expiresAt);
  if (!same) tell();
}

function stopTimers(renewal) {
  if (!renewal) return;
  clearTimeout(renewal.refresh);
  clearTimeout(renewal.expire);
  renewal.refresh = null;
  renewal.expire = null;
}

/** Signed out (or the avatar gone): no image, no timers. */
export function clearImage() {
  stopTimers(state.imageRenewal);
  state.imageRenewal = null;
  setImage(null);
}

/** The URLs of the avatar's image, read (again): for `renewal` (state.imageRenewal when it
 * was started; a newer one supersedes it). */
async function readImage(renewal) {
  let body;
  try {
    ({ body } = await state.api.get(IMAGE_PATH));
  } catch (err) {
    if (state.imageRenewal !== renewal) return;
    if (err.status === 404 || err.status === 401) {
      // No image (or no avatar) after all; a 401 is on its way to the sign-in.
      stopTimers(renewal);
      setImage(null);
      return;
    }
    // Offline, the server away: the image shown stays until its URLs expire (that timer
    // runs on); try again later.
    renewal.failures += 1;
    clearTimeout(renewal.refresh);
    renewal.refresh = setTimeout(() => renew(renewal), retryDelay(renewal.failures));
    return;
  }
  if (state.imageRenewal !== renewal) return;
  const receivedAt = Date.now();
  const image = imageFromAnswer(body, receivedAt);
  stopTimers(renewal);
  renewal.failures = 0;
  renewal.receivedAt = receivedAt;
  renewal.reloadedOnError = false;
  setImage(image);
  if (!image) return;
  const { refreshInMs, expireInMs } = renewalDelays(image, receivedAt, receivedAt);
  renewal.refresh = setTimeout(() => renew(renewal), refreshInMs);
  renewal.expire = setTimeout(() => {
    // Not renewed in time: off the screen rather than broken (the initial shows).
    if (state.imageRenewal === renewal) setImage(null);
  }, expireInMs);
}

function renew(renewal) {
  if (state.imageRenewal !== renewal) return Promise.resolve();
  renewal.loading = readImage(renewal);
  return renewal.loading;
}

/**
 * Shows the image of state.avatar: its URLs read when its image_path is not the one shown
 * (none: no image). The promise ends when the image (or none) is shown.
 */
export function syncImage() {
  const path = state.avatar?.image_path ?? null;
  const current = state.imageRenewal;
  showImage(); // the name (its initial, the image's alt) may have changed
  if (current && current.path === path) return current.loading ?? Promise.resolve();
  stopTimers(current);
  if (!path) {
    state.imageRenewal = null;
    setImage(null);
    return Promise.resolve();
  }
  const renewal = {
    path,
    refresh: null,
    expire: null,
    failures: 0,
    receivedAt: 0,
    reloadedOnError: false,
    loading: null,
  };
  state.imageRenewal = renewal;
  // Another image than the one shown: its URLs may already point at deleted files.
  setImage(null);
  return renew(renewal);
}

/** Timers sleep with the computer: back on the page (or online), renew what is due. */
function renewIfDue() {
  const renewal = state.imageRenewal;
  const image = state.avatarImage;
  if (!renewal || document.visibilityState !== "visible") return;
  if (!image) {
    if (renewal.failures > 0 || renewal.receivedAt) renew(renewal);
    return;
  }
  if (renewalDelays(image, renewal.receivedAt, Date.now()).refreshInMs === 0) renew(renewal);
}

// --- the dialog ------------------------------------------------------------------------------

const imageMessage = (text, kind) => dialogMessage("image-message", text, kind);

/** The file chosen last (from the file picker or the camera), or null. */
function chosenFile() {
  const id = $("image-form").dataset.chosen;
  return (id && $(id).files[0]) || null;
}

function letGoOfPreview() {
  const preview = $("image-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
}

/** The preview: the chosen file (not sent yet), else the image the avatar has. */
function showPreview() {
  const preview = $("image-preview");
  const caption = $("image-preview-caption");
  letGoOfPreview();
  const file = chosenFile();
  if (file) {
    preview.src = URL.createObjectURL(file);
    preview.alt = `Preview of ${file.name}`;
    preview.hidden = false;
    caption.textContent = `${file.name}: not uploaded yet. Upload sends it.`;
  } else if (state.avatarImage) {
    preview.src = state.avatarImage.url512;
    preview.alt = "Your avatar's image now";
    preview.hidden = false;
    caption.textContent = "Your avatar's image now.";
  } else {
    preview.removeAttribute("src");
    preview.hidden = true;
    caption.textContent = "Your avatar has no image yet.";
  }
  $("image-remove").hidden = !state.avatar?.image_path;
}

function openImageDialog() {
  $("image-form").reset();
  delete $("image-form").dataset.chosen;
  imageMessage("");
  showPreview();
  $("image-dialog").showModal();
  $("image-file").focus();
}

function closeImageDialog(status) {
  if (status) $("persona-status").textContent = status;
  $("image-dialog").close();
}

/** A 412: the avatar read again (shown as it is now), and the dialog says so. */
async function changedMeanwhile(again) {
  await loadAvatar().catch(() => {});
  await syncImage();
  showPreview();
  imageMessage(changedElsewhere(again), "error");
}

async function upload() {
  const file = chosenFile();
  if (!file) {
    imageMessage("Choose an image, or take a photo, first.", "error");
    $("image-file").focus();
    return;
  }
  imageMessage(`Uploading ${file.name}…`);
  try {
    const { body, response } = await state.api.json("PUT", IMAGE_PATH, {
      body: file,
      contentType: file.type || "application/octet-stream",
      headers: { "If-Match": state.etag },
    });
    setAvatar(body, response);
    await syncImage();
    closeImageDialog(`The new image is saved (version ${body.version}).`);
  } catch (err) {
    if (err.status === 401) return;
    if (err.status === 412) return changedMeanwhile("Send the image again.");
    imageMessage(imageFailure(err).text, "error");
  }
}

async function remove() {
  imageMessage("Removing the image…");
  try {
    const { body, response } = await state.api.json("DELETE", IMAGE_PATH, {
      headers: { "If-Match": state.etag },
    });
    setAvatar(body, response);
    await syncImage();
    closeImageDialog(`The image was removed (version ${body.version}).`);
  } catch (err) {
    if (err.status === 401) return;
    if (err.status === 412) return changedMeanwhile("Remove it again if you still want to.");
    imageMessage(imageFailure(err, "Removing the image").text, "error");
  }
}

export function wireImage() {
  $("avatar-image").addEventListener("error", () => {
    // The URLs failed to load (expired while asleep, the file gone): read them once more,
    // and meanwhile show the initial.
    const renewal = state.imageRenewal;
    $("avatar-image").hidden = true;
    if (renewal && !renewal.reloadedOnError) {
      renewal.reloadedOnError = true;
      renew(renewal);
    }
  });
  document.addEventListener("visibilitychange", renewIfDue);
  window.addEventListener("online", renewIfDue);

  $("open-image").addEventListener("click", openImageDialog);
  for (const id of ["image-file", "image-camera"]) {
    $(id).addEventListener("change", () => {
      const other = $(id === "image-file" ? "image-camera" : "image-file");
      if ($(id).files[0]) {
        $("image-form").dataset.chosen = id;
        other.value = "";
      }
      imageMessage("");
      showPreview();
    });
  }
  $("image-preview").addEventListener("error", () => {
    const file = chosenFile();
    if (file) $("image-preview-caption").textContent = `This browser cannot show ${file.name}; it can still be sent.`;
  });
  $("image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("image-submit"), upload);
  });
  $("image-remove").addEventListener("click", () => busy($("image-remove"), remove));
  $("image-close").addEventListener("click", () => $("image-dialog").close());
  $("image-dialog").addEventListener("close", () => {
    letGoOfPreview();
    $("image-preview").removeAttribute("src");
    $("image-form").reset();
    delete $("image-form").dataset.chosen;
    setTimeout(() => {
      if (document.activeElement === document.body && !$("view-chat").hidden) $("open-image").focus();
    });
  });
}
