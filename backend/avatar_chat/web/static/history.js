// The persona history, in a dialog: every version of the avatar (GET /avatars/me/history,
// newest first, a page at a time with its cursor), each with what changed from the version
// before it and when (personadiff.js words it). Edits made elsewhere, the Supabase dashboard
// included, are recorded by a trigger and listed like any other. "Restore version N" sends
// POST /avatars/me/restore/{N} with If-Match from the ETag (a 412 shows the avatar as it is
// now and says it changed meanwhile). A reply's "persona vN" label dispatches a document
// "persona-version" event ({detail: {version}}): the history opens at that version.

import { restoreChangedMeanwhile, restoreFailure } from "./avatarwords.js";
import { $, busy, dialogMessage } from "./dom.js";
import { changeSummary, versionWhen, withPrevious } from "./personadiff.js";
import { loadAvatar, setAvatar } from "./persona.js";
import { state } from "./state.js";

/** Versions read at a time. */
const HISTORY_PAGE = 20;

const historyMessage = (text, kind) => dialogMessage("history-message", text, kind);

function itemOf(version) {
  return $("history-list").querySelector(`li[data-version="${Number(version)}"]`);
}

function renderVersion({ version, before }, highlighted) {
  const item = document.createElement("li");
  item.className = "history-item";
  item.dataset.version = String(version.version);
  item.tabIndex = -1;
  const current = version.version === state.avatar?.version;
  if (version.version === highlighted) item.setAttribute("aria-current", "true");

  const head = document.createElement("p");
  head.className = "history-head";
  const title = document.createElement("span");
  title.id = `history-v${version.version}`;
  title.textContent = `Version ${version.version}`;
  if (current) {
    const badge = document.createElement("span");
    badge.className = "history-badge";
    badge.textContent = " · current";
    title.append(badge);
  }
  const when = document.createElement("time");
  when.dateTime = version.changed_at;
  when.textContent = versionWhen(version.changed_at);
  head.append(title, when);
  item.setAttribute("aria-labelledby", title.id);

  const changes = document.createElement("p");
  changes.className = "history-changes";
  changes.textContent = changeSummary(before, version);
  const persona = document.createElement("p");
  persona.className = "hint";
  persona.textContent = `${version.name} · ${version.personality}`;
  item.append(head, changes, persona);

  if (!current) {
    const restore = document.createElement("button");
    restore.type = "button";
    restore.className = "secondary";
    restore.textContent = `Restore version ${version.version}`;
    restore.addEventListener("click", () => busy(restore, () => restoreVersion(version.version)));
    item.append(restore);
  }
  return item;
}

function render() {
  const history = state.history;
  $("history-list").replaceChildren(
    ...withPrevious(history.items, !history.nextCursor).map((pair) => renderVersion(pair, history.highlight)),
  );
  $("history-more").hidden = !history.nextCursor;
}

/** The next page of versions (the first when none is loaded); false when it failed. */
async function loadPage(history) {
  const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (history.nextCursor) query.set("cursor", history.nextCursor);
  try {
    const { body } = await state.api.get(`/avatars/me/history?${query}`);
    if (state.history !== history) return false; // read again meanwhile
    history.items.push(...body.items);
    history.nextCursor = body.next_cursor;
    render();
    return true;
  } catch (err) {
    if (state.history === history && err.status !== 401) {
      historyMessage(`Loading the history failed: ${err.message}`, "error");
    }
    return false;
  }
}

/** Reads the history from its newest version, on until `version` when one is asked for;
 * that version is marked, scrolled to and focused. */
async function readHistory(version = null) {
  const history = { items: [], nextCursor: null, highlight: version, opener: state.history?.opener ?? null };
  state.history = history;
  $("history-list").replaceChildren();
  $("history-more").hidden = true;
  historyMessage("Loading the history…");
  // The avatar as it is now, too (changed elsewhere, say in the dashboard): which version
  // is current, and the panel up to date.
  await loadAvatar().catch(() => {});
  if (state.history !== history || !(await loadPage(history))) return;
  while (version !== null && !history.items.some((v) => v.version === version) && history.nextCursor) {
    if (!(await loadPage(history))) return;
  }
  historyMessage(history.items.length ? "" : "Your avatar has no versions yet.");
  if (version === null) return;
  const item = itemOf(version);
  if (!item) {
    historyMessage(`Version ${version} is not in your avatar's history.`, "error");
    return;
  }
  item.scrollIntoView({ block: "nearest" });
  item.focus();
}

/** Opens the history (at `version`, when one is given: a reply's "persona vN"). */
export async function openHistory(version = null) {
  const dialog = $("history-dialog");
  if (!dialog.open) {
    state.history = { items: [], nextCursor: null, highlight: null, opener: document.activeElement };
    dialog.showModal();
  }
  if (version === null) $("history-close").focus();
  await readHistory(version);
}

async function restoreVersion(version) {
  historyMessage(`Restoring version ${version}…`);
  try {
    const { body, response } = await state.api.post(`/avatars/me/restore/${version}`, undefined, {
      headers: { "If-Match": state.etag },
    });
    setAvatar(body, response);
    const done = `Restored version ${version} as version ${body.version}; the next reply uses it.`;
    $("persona-status").textContent = done;
    await readHistory();
    historyMessage(done, "done");
    itemOf(body.version)?.focus();
  } catch (err) {
    if (err.status === 401) return;
    if (err.status === 412) {
      await readHistory(version); // the avatar read again with it
      historyMessage(restoreChangedMeanwhile(version, state.avatar?.version), "error");
      itemOf(version)?.querySelector("button")?.focus();
      return;
    }
    historyMessage(restoreFailure(err, version), "error");
  }
}

export function wireHistory() {
  $("open-history").addEventListener("click", () => openHistory());
  $("history-more").addEventListener("click", () =>
    busy($("history-more"), async () => {
      const history = state.history;
      const first = history.items.length;
      if (await loadPage(history)) {
        // The focus goes to the first of the versions just shown (the button may be gone).
        $("history-list").children[first]?.focus();
      }
    }),
  );
  $("history-close").addEventListener("click", () => $("history-dialog").close());
  $("history-dialog").addEventListener("close", () => {
    // The event comes after the dialog closed: it may have been opened again meanwhile (a
    // reply's "persona vN" right after Escape), and that history is not to be dropped.
    if ($("history-dialog").open) return;
    const opener = state.history?.opener;
    state.history = null;
    setTimeout(() => {
      if (document.activeElement !== document.body) return;
      if (opener?.isConnected && !opener.closest("[hidden]")) opener.focus();
      else if (!$("view-chat").hidden) $("open-history").focus();
    });
  });
  document.addEventListener("persona-version", (event) => {
    const version = Number(event.detail?.version);
    if (!Number.isInteger(version) || version < 1 || !state.avatar || $("view-chat").hidden) return;
    openHistory(version);
  });
}
