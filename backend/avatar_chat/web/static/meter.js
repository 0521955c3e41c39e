// The usage meter under the composer: GET /me/usage, shown as one labelled bar (role
// "meter") per quantity the plan limits; usage.js decides what it shows. Read when the chat
// opens and after every turn ends (done, error, stop), never polled.

import { $ } from "./dom.js";
import { state } from "./state.js";
import { meterView } from "./usage.js";

function meterElement(meter) {
  const element = document.createElement("div");
  element.className = "usage-meter";
  element.id = `usage-${meter.id}`;
  element.dataset.level = meter.level;
  element.setAttribute("role", "meter");
  element.setAttribute("aria-label", meter.label);
  element.setAttribute("aria-valuemin", "0");
  element.setAttribute("aria-valuemax", String(meter.limit));
  // A meter's value stays within its range; the text says how far over it went.
  element.setAttribute("aria-valuenow", String(Math.min(meter.used, meter.limit)));
  element.setAttribute("aria-valuetext", meter.valueText);
  const text = document.createElement("span");
  text.className = "usage-text";
  text.textContent = meter.text;
  const bar = document.createElement("span");
  bar.className = "usage-bar";
  const fill = document.createElement("span");
  fill.className = "usage-fill";
  // A CSS property set through the CSSOM: allowed by the page's CSP (no inline style).
  fill.style.setProperty("--share", String(meter.share));
  bar.append(fill);
  element.append(text, bar);
  return element;
}

export function renderUsage() {
  const usage = $("usage");
  const view = meterView(state.usage);
  usage.hidden = !view;
  if (!view) {
    usage.replaceChildren();
    return;
  }
  usage.replaceChildren(
    ...view.periods.map((period) => {
      const group = document.createElement("div");
      group.className = "usage-period";
      group.dataset.period = period.period;
      const title = document.createElement("span");
      title.className = "usage-title";
      title.textContent = `${period.title}:`;
      title.setAttribute("aria-hidden", "true"); // each meter's own label names its period
      group.append(title, ...period.meters.map(meterElement));
      return group;
    }),
  );
}

/** Reads GET /me/usage and shows it. A read asked for while one is under way is made once
 * that one is done (the turn that just ended may not have been in it), and only once. */
export async function refreshUsage() {
  if (!state.api) return;
  if (state.usageRead) {
    state.usageRead.again = true;
    return;
  }
  const read = { again: true };
  state.usageRead = read;
  try {
    while (read.again) {
      read.again = false;
      const { body } = await state.api.get("/me/usage");
      if (state.usageRead !== read) return; // signed out meanwhile: not this session's
      state.usage = body;
      renderUsage();
    }
  } catch {
    // not shown: the meter keeps what it showed (a server without quotas: none at all)
  } finally {
    if (state.usageRead === read) state.usageRead = null;
  }
}

/** Signed out: nothing of the last session's usage stays, nor a read under way for it. */
export function clearUsage() {
  state.usage = null;
  state.usageRead = null;
  renderUsage();
}
