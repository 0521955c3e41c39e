// Small view helpers shared by the page's modules.

export const $ = (id) => document.getElementById(id);

/** A dialog's message line `id`: a status, or an alert for a failure (`kind` "error"). */
export function dialogMessage(id, text, kind = "info") {
  const line = $(id);
  line.textContent = text;
  line.dataset.kind = kind;
  line.setAttribute("role", kind === "error" ? "alert" : "status");
}

/** Shows the view with this id (the others hidden) and moves focus to `focusId`. */
export function show(viewId, focusId) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== viewId;
  if (focusId) $(focusId).focus();
}

/** Runs `work` with `button` disabled meanwhile. */
export async function busy(button, work) {
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

/** Saves `blob` as a file named `name` (a temporary <a download> on an object URL). The
 * URL is let go of once the browser has taken the file. */
export function saveFile(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  try {
    link.click();
  } finally {
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
