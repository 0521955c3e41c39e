// Data portability as the page tells it: the names files are saved under (an export, a
// character card), the media type a card is sent as, how far a download has come, what an
// import did, and what a refused export, import or card says (and whether trying again can
// help). Pure: no DOM, no network, no clock of its own, so Node's test runner reads it too
// (tests/web/js/portability.test.mjs); account.js and cards.js show it.

/** Characters no file name may hold on some system (Windows' set, controls, slashes). */
const UNSAFE_IN_NAMES = /[\u0000-\u001f\u007f"*/:<>?\\|]+/g;

/** A name that saves as it is everywhere: no path, no reserved characters, not hidden
 * (no leading dot), no trailing dots or spaces (Windows drops them), at most `max`
 * characters; "" when nothing is left. */
function safeName(name, max) {
  const cleaned = String(name ?? "")
    .replace(UNSAFE_IN_NAMES, " ")
    .replace(/\s+/g, " ")
    .trim()
    .replace(/^[.\s]+/, "")
    .replace(/[.\s]+$/, "");
  return [...cleaned].slice(0, max).join("").trim();
}

/**
 * What a character card of the avatar `name` saves as: "Ava.png", "Ava.json";
 * "character-card.png" when the name has nothing a file name can hold.
 * @param {string} name the avatar's name
 * @param {"png"|"json"} extension
 */
export function cardFilename(name, extension) {
  return `${safeName(name, 80) || "character-card"}.${extension}`;
}

/**
 * The file name a Content-Disposition header gives (`filename*=UTF-8''...` before
 * `filename="..."`), made safe to save as; null when it gives none.
 */
export function filenameFromDisposition(header) {
  if (!header) return null;
  let name = null;
  const extended = /filename\*\s*=\s*([\w!#$%&+^`{}~.-]+)'[^']*'([^;\s]+)/i.exec(header);
  if (extended) {
    try {
      name = decodeURIComponent(extended[2]);
    } catch {
      name = null; // not UTF-8 percent-encoding: the plain filename, if any
    }
  }
  if (name === null) {
    const quoted = /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(header);
    const token = /filename\s*=\s*([^";\s]+)/i.exec(header);
    if (quoted) name = quoted[1].replace(/\\(.)/g, "$1");
    else if (token) name = token[1];
  }
  if (name === null) return null;
  return safeName(name.split(/[/\\]/).pop(), 200) || null;
}

const pad = (n) => String(n).padStart(2, "0");

/** The name the API gives an export at `now` (UTC): "avatar-chat-export-20261207-183000.zip". */
export function exportFilename(now = Date.now()) {
  const d = new Date(now);
  const day = `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}`;
  const time = `${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}`;
  return `avatar-chat-export-${day}-${time}.zip`;
}

/** The extension of a file name, lower case, without the dot ("" when none). */
function extensionOf(fileName) {
  const match = /\.([^./\\]+)$/.exec(String(fileName ?? ""));
  return match ? match[1].toLowerCase() : "";
}

/**
 * The media type a character card file is sent as: "image/png" for a .png, and
 * "application/json" for a .json (by its name first, then by the type the browser gave
 * it); null when it is neither (the page asks for another file).
 */
export function cardContentType(fileName, fileType = "") {
  const byName = { png: "image/png", json: "application/json" }[extensionOf(fileName)];
  if (byName) return byName;
  const type = String(fileType ?? "")
    .split(";")[0]
    .trim()
    .toLowerCase();
  return type === "image/png" || type === "application/json" ? type : null;
}

/** True when a file looks like an export archive: a .zip, or a file the browser typed as zip. */
export function isZipFile(fileName, fileType = "") {
  if (extensionOf(fileName) === "zip") return true;
  const type = String(fileType ?? "").toLowerCase();
  return type === "application/zip" || type === "application/x-zip-compressed";
}

/** A size in a few characters: 900 -> "900 B", 1234 -> "1.2 kB", 3456789 -> "3.5 MB". */
export function formatBytes(n) {
  const value = Math.max(0, Math.floor(Number(n) || 0));
  for (const [size, unit] of [
    [1e9, "GB"],
    [1e6, "MB"],
    [1e3, "kB"],
  ]) {
    if (value >= size) {
      const scaled = value / size;
      return `${scaled < 10 ? scaled.toFixed(1) : Math.round(scaled)} ${unit}`;
    }
  }
  return `${value} B`;
}

/** What an export shows while it comes in: the bytes so far (and of how many, when known). */
export function downloadProgress(received, total = null) {
  if (!received) return "Preparing your archive…";
  const of = total ? ` of ${formatBytes(total)}` : "";
  return `Downloading your archive… ${formatBytes(received)}${of}`;
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/**
 * How long until one may try again, in words: "in 30 seconds", "in 5 minutes", "in about 3
 * hours"; null when not known.
 * @param {number|null} seconds Retry-After, or the error's `retry_after`
 */
export function waitPhrase(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return null;
  const s = Math.max(1, Math.ceil(Number(seconds)));
  if (s < 60) return `in ${plural(s, "second")}`;
  if (s < 3600) return `in ${plural(Math.ceil(s / 60), "minute")}`;
  return `in about ${plural(Math.ceil(s / 3600), "hour")}`;
}

/** Seconds to wait, from Retry-After or else the error's details (`retry_after`). */
function retryAfterOf(err) {
  return err?.retryAfter ?? err?.details?.retry_after ?? null;
}

/**
 * What a refused or failed export says, and whether the notice offers Retry (false when it
 * would be refused again until later).
 * @param {{status: number, code: string, message: string, retryAfter?: number|null, details?: object|null}} err
 * @returns {{text: string, retry: boolean}}
 */
export function exportFailure(err) {
  const wait = waitPhrase(retryAfterOf(err));
  if (err.status === 0) return { text: err.message, retry: true };
  if (err.code === "export_in_progress") {
    return {
      text:
        "An export of your data is already being made (in another tab or on another device). " +
        `Try again once it is done${wait ? ` (at the latest ${wait})` : ""}.`,
      retry: true,
    };
  }
  if (err.code === "export_limited") {
    return {
      text: `You have exported your data as many times as a day allows. You can export again ${wait ?? "tomorrow"}.`,
      retry: false,
    };
  }
  if (err.status === 503) {
    return {
      text: `The server is too busy to export your data right now. Try again ${wait ?? "in a minute"}.`,
      retry: true,
    };
  }
  if (err.code === "download_cut") {
    return { text: "The download stopped before the archive was complete. Try again.", retry: true };
  }
  return { text: `Exporting your data failed: ${err.message}`, retry: err.status >= 500 };
}

/** Which file of an archive the problem is in, when the error's details say ("" if not). */
function whereIn(details) {
  const file = details?.file ?? null;
  return typeof file === "string" ? file : "";
}

/** A sentence ends with a full stop (the API's messages mostly do already). */
function sentence(text) {
  const t = String(text ?? "").trim();
  return !t || /[.!?…]$/.test(t) ? t : `${t}.`;
}

/**
 * What a refused or failed import says, and whether trying the same file again can help.
 * @returns {{text: string, retry: boolean}}
 */
export function importFailure(err) {
  if (err.status === 0) return { text: err.message, retry: true };
  if (err.status === 413) {
    return { text: `This file is too large to import. ${sentence(err.message)}`, retry: false };
  }
  if (err.status === 415) {
    return { text: "This is not an export archive: choose the .zip that “Export my data” saved.", retry: false };
  }
  if (err.status === 422) {
    // archive_invalid, archive_unsafe, archive_version_unsupported: the API's message says
    // what is wrong, the details which file (added when the message does not name it).
    const message = sentence(err.message);
    const file = whereIn(err.details);
    const text = file && !message.includes(file) ? `${message.replace(/[.!?…]$/, "")} (${file}).` : message;
    return { text: `This archive cannot be imported. ${text}`, retry: false };
  }
  if (err.status === 503) {
    const wait = waitPhrase(retryAfterOf(err));
    return { text: `The server is too busy to import right now. Try again ${wait ?? "in a minute"}.`, retry: true };
  }
  if (err.status === 429) {
    const wait = waitPhrase(retryAfterOf(err));
    return { text: `${sentence(err.message)}${wait ? ` You can try again ${wait}.` : ""}`, retry: false };
  }
  return { text: `Importing failed: ${err.message}`, retry: err.status >= 500 };
}

/**
 * What an import did, in one sentence: "Imported 3 conversations, 120 messages and your
 * avatar." or "This archive was already imported; nothing changed."
 * @param {{already_imported: boolean, conversations: number, messages: number, avatar: string}} result
 *   the answer of POST /me/import
 */
export function importResultText(result) {
  if (result.already_imported) return "This archive was already imported; nothing changed.";
  const counts = `${plural(result.conversations, "conversation")}, ${plural(result.messages, "message")}`;
  switch (result.avatar) {
    case "imported":
      return `Imported ${counts} and the archive's avatar.`;
    case "replaced":
      return `Imported ${counts}; your avatar was replaced with the archive's.`;
    case "kept":
      return `Imported ${counts}; your own avatar was kept.`;
    default:
      return `Imported ${counts}.`;
  }
}

/** What the card dialog says before a card replaces the avatar `name` (null: there is none). */
export function cardReplaceWarning(name) {
  if (!name) return null;
  return (
    `This replaces ${name} with the card's character: name, personality, backstory, and the image ` +
    "when the card has one. Your conversations stay."
  );
}

/**
 * What a refused or failed card upload says: the API's message (422 card_malformed,
 * card_invalid, card_backstory_too_long, image_undecodable, ...); 412 and 409 (the avatar
 * changed or made elsewhere) are told by cards.js.
 * @returns {string}
 */
export function cardFailure(err) {
  if (err.status === 0) return err.message;
  if (err.status === 413) return `This card is too large. ${sentence(err.message)}`;
  if (err.status === 415) return "Choose a character card: a .png with a card in it, or a .json.";
  if (err.status === 422 || err.status === 400) return `This character card cannot be used: ${sentence(err.message)}`;
  if (err.status === 429) {
    const wait = waitPhrase(retryAfterOf(err));
    return `${sentence(err.message)}${wait ? ` You can try again ${wait}.` : ""}`;
  }  return `Creating the avatar from the card failed: ${err.message}`;
}
