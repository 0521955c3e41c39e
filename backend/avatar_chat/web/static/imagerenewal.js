// The avatar's image as the page keeps it, and when its signed URLs are renewed: the
// decisions only (no timers, no DOM, the clock handed in), so that Node's test runner reads
// them too (tests/web/js/imagerenewal.test.mjs); avatarimage.js sets the timers.
//
// GET /avatars/me/image answers {"image_path", "urls": {"512", "128"}, "expires_in"}: URLs
// anyone may fetch for `expires_in` seconds. They are fetched again at 80% of that, so a
// fresh pair is on screen well before the old one expires; should that fail (offline, the
// computer asleep), the image is taken off the screen when its URLs expire, never shown
// broken.

/** Renew when this share of the URLs' lifetime has passed. */
export const RENEW_AT = 0.8;
/** Never renew sooner than this after the URLs came (a very short expires_in, a clock jump). */
export const MIN_RENEW_MS = 5_000;
/** A failed renewal is tried again after this long (then twice as long, and so on). */
export const RETRY_RENEW_MS = 30_000;

/**
 * The image as state.avatarImage holds it: {url128, url512, expiresAt} (expiresAt in ms,
 * from `now`, when the answer came), or null when the answer has no usable URL.
 */
export function imageFromAnswer(body, now) {
  const urls = body?.urls ?? {};
  const url512 = urls["512"] ?? urls["128"] ?? null;
  const url128 = urls["128"] ?? urls["512"] ?? null;
  const seconds = Number(body?.expires_in);
  if (!url128 || !Number.isFinite(seconds) || seconds <= 0) return null;
  return { url128, url512, expiresAt: now + seconds * 1000 };
}

/**
 * When to renew an image whose URLs came at `receivedAt` and expire at `image.expiresAt`
 * (both ms): {refreshInMs, expireInMs} from `now`. refreshInMs is at RENEW_AT of the
 * lifetime (at least MIN_RENEW_MS after it came, and never after it expires); expireInMs
 * is when it must be off the screen (0: now).
 */
export function renewalDelays(image, receivedAt, now) {
  const lifetime = Math.max(0, image.expiresAt - receivedAt);
  const renewAt = receivedAt + Math.min(lifetime, Math.max(MIN_RENEW_MS, lifetime * RENEW_AT));
  return {
    refreshInMs: Math.max(0, Math.min(renewAt, image.expiresAt) - now),
    expireInMs: Math.max(0, image.expiresAt - now),
  };
}

/** A failed renewal is tried again after RETRY_RENEW_MS, doubling each time, at most
 * MAX_RETRY_MS; meanwhile the image shown stays until its URLs expire. */
export const MAX_RETRY_MS = 300_000;

/** Milliseconds before failed renewal number `attempt` (1, 2, ...) is tried again. */
export function retryDelay(attempt) {
  return Math.min(MAX_RETRY_MS, RETRY_RENEW_MS * 2 ** Math.max(0, attempt - 1));
}

/** Whether the image is due for renewal at `now`: its renewal time has passed (a timer
 * that slept with the computer), or it has expired. */
export function isDue(image, receivedAt, now) {
  return renewalDelays(image, receivedAt, now).refreshInMs === 0;
}

/** The `srcset` of the image (with the <img>'s `sizes`, the browser picks): the 128 px
 * rendition, and the 512 px one for screens that need more (a phone at 3x, a preview). */
export function srcsetOf(image) {
  if (!image) return "";
  if (!image.url512 || image.url512 === image.url128) return `${image.url128} 128w`;
  return `${image.url128} 128w, ${image.url512} 512w`;
}
