// The plan's usage and quotas, as the page tells them: what the usage meter shows (from
// GET /me/usage) and what a 429 quota_exceeded says. Pure: no DOM, no network, no clock of
// its own (`now`, the locale and the time zone are handed in), so Node's test runner reads
// it too (tests/web/js/usage.test.mjs); meter.js shows it.

/** A meter turns "high" from this share of its limit on (and "full" at all of it). */
export const HIGH_SHARE = 0.8;

/**
 * A count in a few characters: 950 -> "950", 1234 -> "1.2k", 20000 -> "20k", 1250000 ->
 * "1.2M". Rounded down, so that what was used never shows as the limit before it is.
 */
export function formatCount(n) {
  const value = Math.max(0, Math.floor(Number(n) || 0));
  for (const [size, suffix] of [
    [1e9, "G"],
    [1e6, "M"],
    [1e3, "k"],
  ]) {
    if (value >= size) {
      const scaled = value / size;
      // One decimal below 100 (1.2k, 12.3k), none above (123k).
      const shown = scaled < 100 ? Math.floor(scaled * 10) / 10 : Math.floor(scaled);
      return `${shown}${suffix}`;
    }
  }
  return String(value);
}

/** The calendar date ("2026-12-08") of `date` in `timeZone` (undefined: the user's). */
function calendarDate(date, timeZone) {
  return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(
    date,
  );
}

function nextCalendarDate(isoDate) {
  const [year, month, day] = isoDate.split("-").map(Number);
  return new Date(Date.UTC(year, month - 1, day + 1)).toISOString().slice(0, 10);
}

/**
 * When a quota resets, in the user's own time: "today at 6:00 PM", "tomorrow at 1:00 AM",
 * or "on Jan 1, 2027, 1:00 AM"; null when `resetsAt` is missing or unreadable.
 * @param {string|Date|null} resetsAt the server's `resets_at` (ISO 8601, UTC)
 * @param {object} [options]
 * @param {string} [options.locale] a BCP 47 tag; undefined: the browser's
 * @param {string} [options.timeZone] an IANA zone; undefined: the browser's
 * @param {number} [options.now] milliseconds since the epoch
 */
export function resetPhrase(resetsAt, { locale, timeZone, now = Date.now() } = {}) {
  if (resetsAt === null || resetsAt === undefined) return null;
  const when = new Date(resetsAt);
  if (Number.isNaN(when.getTime())) return null;
  const today = calendarDate(new Date(now), timeZone);
  const day = calendarDate(when, timeZone);
  if (day === today || day === nextCalendarDate(today)) {
    const time = new Intl.DateTimeFormat(locale, { timeZone, timeStyle: "short" }).format(when);
    return `${day === today ? "today" : "tomorrow"} at ${time}`;
  }
  return `on ${new Intl.DateTimeFormat(locale, { timeZone, dateStyle: "medium", timeStyle: "short" }).format(when)}`;
}

/** The quantities a plan can limit, as GET /me/usage reports them: `<field>` used in the
 * period, `<field>_limit` allowed (null: unlimited). */
const QUANTITIES = [
  { id: "day-messages", period: "day", unit: "messages", field: "messages", label: "Messages today" },
  { id: "day-tokens", period: "day", unit: "tokens", field: "tokens", label: "Tokens today" },
  { id: "month-tokens", period: "month", unit: "tokens", field: "tokens", label: "Tokens this month" },
];

const PERIOD_TITLES = { day: "Today", month: "This month" };

/** "ok", "high" (from HIGH_SHARE of the limit) or "full" (all of it, or a limit of 0). */
export function meterLevel(used, limit) {
  if (limit <= 0 || used >= limit) return "full";
  return used / limit >= HIGH_SHARE ? "high" : "ok";
}

/**
 * What the usage meter shows: one meter per quantity the plan limits (a null limit is
 * unlimited and not shown), grouped by period; null when nothing is limited (the meter is
 * then hidden: no numbers to watch).
 * @param {object|null} usage the body of GET /me/usage
 * @param {object} [options] locale, timeZone, now: as resetPhrase takes them
 * @returns {{periods: {period: string, title: string, meters: object[]}[]}|null}
 */
export function meterView(usage, options = {}) {
  if (!usage) return null;
  const periods = [];
  for (const quantity of QUANTITIES) {
    const counts = usage[quantity.period];
    const limit = counts?.[`${quantity.field}_limit`];
    if (limit === null || limit === undefined) continue;
    const used = Math.max(0, counts[quantity.field] ?? 0);
    const resets = resetPhrase(counts.resets_at, options);
    const meter = {
      id: quantity.id,
      label: quantity.label,
      text: `${formatCount(used)} / ${formatCount(limit)} ${quantity.unit}`,
      valueText: `${used} of ${limit} used${resets ? `, resets ${resets}` : ""}`,
      used,
      limit,
      share: limit > 0 ? Math.min(1, used / limit) : 1,
      level: meterLevel(used, limit),
    };
    let group = periods.find((p) => p.period === quantity.period);
    if (!group) {
      group = { period: quantity.period, title: PERIOD_TITLES[quantity.period], meters: [] };
      periods.push(group);
    }
    group.meters.push(meter);
  }
  return periods.length ? { periods } : null;
}

/** What was used up, by the `limit` of a quota_exceeded error's details. */
const USED_UP = {
  messages_per_day: (allowed) => `today's ${allowed === null ? "" : `${formatCount(allowed)} `}messages`,
  tokens_per_day: (allowed) => `today's ${allowed === null ? "" : `${formatCount(allowed)} `}tokens`,
  tokens_per_month: (allowed) => `this month's ${allowed === null ? "" : `${formatCount(allowed)} `}tokens`,
};

/**
 * What a 429 quota_exceeded says: which quota of which plan is used up, and when it resets
 * in the user's own time, e.g. "You have used today's 10 messages on the free plan. You
 * can send again tomorrow at 1:00 AM."
 * @param {object|null} details the error's details: {plan, limit, allowed, used, resets_at}
 * @param {object} [options]
 * @param {number|null} [options.retryAfter] Retry-After in seconds: the reset when
 *   `resets_at` is missing
 * @param {string} [options.fallback] the server's own message, for a quota this client
 *   does not know
 * @param {string} [options.locale]
 * @param {string} [options.timeZone]
 * @param {number} [options.now]
 */
export function quotaMessage(details, { retryAfter = null, fallback = "", ...options } = {}) {
  const now = options.now ?? Date.now();
  const usedUp = USED_UP[details?.limit];
  const plan = details?.plan ? `the ${details.plan} plan` : "your plan";
  const first = usedUp
    ? `You have used ${usedUp(details.allowed ?? null)} on ${plan}.`
    : fallback || "You have used your plan's quota.";
  const resetsAt = details?.resets_at ?? (retryAfter === null ? null : new Date(now + retryAfter * 1000));
  const resets = resetPhrase(resetsAt, { ...options, now });
  return resets ? `${first} You can send again ${resets}.` : first;
}
