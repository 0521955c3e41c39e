// The persona history as the page tells it: what changed from one version to the next
// (name, personality, backstory: a short summary), and when. Pure: no DOM, no network, the
// locale and time zone handed in, so that Node's test runner reads it too
// (tests/web/js/personadiff.test.mjs); history.js shows it.
//
// A version is an item of GET /avatars/me/history: {version, name, personality, backstory,
// changed_at}. Every change is there, whoever made it (this page, another client, an edit
// in the Supabase dashboard: a trigger records them all), so they are told alike.

/** At most this many characters of a backstory's changed words are quoted. */
export const QUOTE_MAX = 60;

const words = (text) => String(text ?? "").split(/\s+/).filter(Boolean);

/** `text` cut to `max` characters (on a word when it can), with "…" where it was cut. */
export function shorten(text, max = QUOTE_MAX) {
  const chars = [...text];
  if (chars.length <= max) return text;
  const cut = chars.slice(0, max - 1).join("");
  const space = cut.lastIndexOf(" ");
  return `${(space > max / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/**
 * What changed between two backstories, by words: the words taken out and the words put in
 * where they differ (what both share before and after is left out, marked "…").
 * @returns {{removed: string, added: string, before: boolean, after: boolean}} before/after:
 *   whether unchanged words come before/after the change
 */
export function wordChange(from, to) {
  const a = words(from);
  const b = words(to);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let end = 0;
  while (end < a.length - start && end < b.length - start && a[a.length - 1 - end] === b[b.length - 1 - end]) end++;
  return {
    removed: a.slice(start, a.length - end).join(" "),
    added: b.slice(start, b.length - end).join(" "),
    before: start > 0,
    after: end > 0,
  };
}

function quote(text, change) {
  const body = shorten(text);
  return `“${change.before ? "…" : ""}${body}${change.after && !body.endsWith("…") ? "…" : ""}”`;
}

/** The backstory's change in a few words, or null when it did not change. */
export function backstoryChange(from, to) {
  const a = String(from ?? "").trim();
  const b = String(to ?? "").trim();
  if (a === b) return null;
  if (!a) return `backstory added: ${quote(b, { before: false, after: false })}`;
  if (!b) return "backstory removed";
  const change = wordChange(a, b);
  if (!change.removed && !change.added) return "backstory reworded (spacing only)";
  if (!change.removed) return `backstory: added ${quote(change.added, change)}`;
  if (!change.added) return `backstory: removed ${quote(change.removed, change)}`;
  // Short enough to read whole: both as they are ("Day 23." → "Day 24.", not "…23." → "…24.").
  if ([...a].length <= QUOTE_MAX && [...b].length <= QUOTE_MAX) return `backstory: “${a}” → “${b}”`;
  return `backstory: ${quote(change.removed, change)} → ${quote(change.added, change)}`;
}

/**
 * What changed from `before` (the version before, null for the first one there is) to
 * `version`, as a list of short phrases (empty when none of the three changed: the version
 * changed something else, e.g. the image).
 */
export function personaChanges(before, version) {
  if (!before) return [];
  const changes = [];
  if (before.name !== version.name) changes.push(`name: ${before.name} → ${version.name}`);
  if (before.personality !== version.personality) {
    changes.push(`personality: ${before.personality} → ${version.personality}`);
  }
  const backstory = backstoryChange(before.backstory, version.backstory);
  if (backstory) changes.push(backstory);
  return changes;
}

const capitalised = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/**
 * One sentence for a version of the history: what changed from `before`, the version
 * before it. `before` undefined: not loaded yet (an older page); null: there is none.
 */
export function changeSummary(before, version) {
  if (before === undefined) return "Changes from the version before: shown with the older versions.";
  if (before === null) {
    return version.version === 1
      ? `Created as ${version.name} (${version.personality}).`
      : `${version.name} (${version.personality}); the versions before it are not kept.`;
  }
  const changes = personaChanges(before, version);
  if (!changes.length) return "Name, personality and backstory unchanged (its image, or something else, changed).";
  const text = capitalised(changes.join("; "));
  return /[.”…]$/.test(text) ? text : `${text}.`;
}

/**
 * Each loaded version with the one before it: `items` newest first, as the history's pages
 * come; `complete`: no older page is left (the oldest loaded has none before it).
 * @returns {{version: object, before: object|null|undefined}[]}
 */
export function withPrevious(items, complete) {
  return items.map((version, i) => ({
    version,
    before: i + 1 < items.length ? items[i + 1] : complete ? null : undefined,
  }));
}

/** When a version was made, in the reader's terms ("12 Mar 2026, 14:05"). */
export function versionWhen(iso, { locale, timeZone } = {}) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? "");
  return new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short", timeZone }).format(date);
}
