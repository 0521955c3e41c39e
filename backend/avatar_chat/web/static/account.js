// The account menu (beside Sign out): "Export my data" (GET /me/export, fetched with the
// bearer token and saved as the file the API names) and "Import data…" (POST /me/import of
// an archive, in a dialog; the conversations are read again after). portability.js words
// what they say.

import { loadConversations } from "./conversations.js";
import { $, busy, dialogMessage, saveFile } from "./dom.js";
import { clearNotice, notify } from "./notice.js";
import {
  downloadProgress,
  exportFailure,
  exportFilename,
  filenameFromDisposition,
  importFailure,
  importResultText,
  isZipFile,
} from "./portability.js";
import { start } from "./signin.js";
import { state } from "./state.js";

/** The progress line is rewritten at most this often while an archive comes in. */
const PROGRESS_EVERY_MS = 500;

function closeMenu({ focus = false } = {}) {
  const menu = $("account-menu");
  if (!menu.open) return;
  menu.open = false;
  if (focus) menu.querySelector("summary").focus();
}

/** A download's bytes as they come in (`onProgress(received)` told now and then), as a Blob. */
export async function readBody(response, onProgress) {
  const type = response.headers.get("Content-Type") || "application/octet-stream";
  if (!response.body) return response.blob();
  const reader = response.body.getReader();
  const parts = [];
  let received = 0;
  let told = 0;
  for (;;) {
    let read;
    try {
      read = await reader.read();
    } catch {
      const cut = new Error("The download stopped before it was complete.");
      cut.status = -1;
      cut.code = "download_cut";
      throw cut;
    }
    if (read.done) break;
    parts.push(read.value);
    received += read.value.byteLength;
    if (Date.now() - told >= PROGRESS_EVERY_MS) {
      told = Date.now();
      onProgress?.(received);
    }
  }
  return new Blob(parts, { type });
}

async function exportData() {
  notify(downloadProgress(0), { kind: "info" });
  try {
    const response = await state.api.fetch("GET", "/me/export", { accept: "application/zip" });
    const total = Number(response.headers.get("Content-Length")) || null;
    const blob = await readBody(response, (received) => {
      if ($("notice").dataset.kind === "info") $("notice-text").textContent = downloadProgress(received, total);
    });
    const name = filenameFromDisposition(response.headers.get("Content-Disposition")) ?? exportFilename();
    saveFile(blob, name);
    notify(`Your data was saved as ${name}.`, { kind: "info" });
  } catch (err) {
    if (err.status === 401) return; // back at the sign-in already
    const failure = exportFailure(err);
    notify(failure.text, { retry: failure.retry ? () => runExport() : null });
  }
}

function runExport() {
  return busy($("export-data"), exportData);
}

const importMessage = (text, kind) => dialogMessage("import-message", text, kind);

function openImport() {
  closeMenu();
  $("import-form").reset();
  importMessage("");
  $("import-dialog").showModal();
  $("import-file").focus();
}

async function importData() {
  const file = $("import-file").files[0];
  if (!file) {
    importMessage("Choose the .zip archive to import.", "error");
    $("import-file").focus();
    return;
  }
  if (!isZipFile(file.name, file.type)) {
    importMessage("This is not an export archive: choose the .zip that “Export my data” saved.", "error");
    return;
  }
  const avatar = $("import-replace-avatar").checked ? "replace" : "keep";
  importMessage(`Importing ${file.name}…`);
  let result;
  try {
    ({ body: result } = await state.api.upload(`/me/import?avatar=${avatar}`, file, "application/zip"));
  } catch (err) {
    if (err.status === 401) return;
    importMessage(importFailure(err).text, "error");
    return;
  }
  importMessage(importResultText(result), "done");
  if (!result.already_imported) await afterImport(result);
}

/** What an import changed, shown: the avatar when it came with the archive (everything is
 * read again, as after a sign-in), else the conversations. */
async function afterImport(result) {
  if (!state.avatar || result.avatar === "imported" || result.avatar === "replaced") {
    await start();
    return;
  }
  try {
    await loadConversations();
  } catch (err) {
    if (err.status !== 401) notify(`Loading the conversations failed: ${err.message}`);
  }
}

export function wireAccount() {
  const menu = $("account-menu");
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) {
      event.preventDefault();
      closeMenu({ focus: true });
    }
  });
  document.addEventListener("click", (event) => {
    if (menu.open && !menu.contains(event.target)) closeMenu();
  });
  $("export-data").addEventListener("click", () => {
    closeMenu({ focus: true });
    clearNotice();
    runExport();
  });
  $("import-data").addEventListener("click", openImport);
  $("import-from-create").addEventListener("click", openImport);
  $("import-form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("import-submit"), importData);
  });
  $("import-close").addEventListener("click", () => $("import-dialog").close());
  $("import-dialog").addEventListener("close", () => {
    // Opened from the menu, which closed: focus goes back to the menu's button (once the
    // browser has tried the hidden menu item it was opened from).
    setTimeout(() => {
      if (document.activeElement === document.body && !$("account").hidden) menu.querySelector("summary").focus();
    });
  });
}
