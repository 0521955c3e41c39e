// Small view helpers shared by the page's modules.

export const $ = (id) => document.getElementById(id);

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
