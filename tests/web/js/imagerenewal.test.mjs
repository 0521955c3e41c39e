// The avatar image's signed URLs, renewed before they expire (imagerenewal.js): the image
// kept from GET /avatars/me/image, when it is renewed (80% of expires_in), when it must be
// off the screen, and a renewal that failed.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  MAX_RETRY_MS,
  MIN_RENEW_MS,
  RETRY_RENEW_MS,
  imageFromAnswer,
  isDue,
  renewalDelays,
  retryDelay,
  srcsetOf,
} from "../../../backend/avatar_chat/web/static/imagerenewal.js";

const answer = (expiresIn = 3600) => ({
  image_path: "u/i",
  urls: { 512: "https://x/512.webp?token=a", 128: "https://x/128.webp?token=a" },
  expires_in: expiresIn,
});

describe("imageFromAnswer", () => {
  test("both sizes, and when they expire", () => {
    assert.deepEqual(imageFromAnswer(answer(3600), 1_000), {
      url128: "https://x/128.webp?token=a",
      url512: "https://x/512.webp?token=a",
      expiresAt: 1_000 + 3_600_000,
    });
  });
  test("one size stands in for the other", () => {
    const image = imageFromAnswer({ urls: { 512: "a" }, expires_in: 60 }, 0);
    assert.deepEqual(image, { url128: "a", url512: "a", expiresAt: 60_000 });
  });
  test("no URL, or no lifetime: nothing to show", () => {
    assert.equal(imageFromAnswer({ urls: {}, expires_in: 60 }, 0), null);
    assert.equal(imageFromAnswer({ urls: { 128: "a" }, expires_in: 0 }, 0), null);
    assert.equal(imageFromAnswer({ urls: { 128: "a" } }, 0), null);
    assert.equal(imageFromAnswer(null, 0), null);
  });
});

describe("renewalDelays", () => {
  test("renewed at 80% of expires_in, off the screen when it expires", () => {
    const image = imageFromAnswer(answer(3600), 0);
    assert.deepEqual(renewalDelays(image, 0, 0), { refreshInMs: 2_880_000, expireInMs: 3_600_000 });
  });
  test("counted from when the answer came, not from now", () => {
    const image = imageFromAnswer(answer(100), 10_000);
    assert.deepEqual(renewalDelays(image, 10_000, 50_000), { refreshInMs: 40_000, expireInMs: 60_000 });
  });
  test("a short lifetime: not sooner than MIN_RENEW_MS, never after it expires", () => {
    assert.equal(renewalDelays(imageFromAnswer(answer(2), 0), 0, 0).refreshInMs, 2_000);
    assert.equal(renewalDelays(imageFromAnswer(answer(6), 0), 0, 0).refreshInMs, MIN_RENEW_MS);
    assert.equal(renewalDelays(imageFromAnswer(answer(10), 0), 0, 0).refreshInMs, 8_000);
  });
  test("a timer that slept past its time: renew at once; expired: off the screen at once", () => {
    const image = imageFromAnswer(answer(100), 0);
    assert.deepEqual(renewalDelays(image, 0, 90_000), { refreshInMs: 0, expireInMs: 10_000 });
    assert.deepEqual(renewalDelays(image, 0, 200_000), { refreshInMs: 0, expireInMs: 0 });
    assert.equal(isDue(image, 0, 79_999), false);
    assert.equal(isDue(image, 0, 80_000), true);
  });
});

describe("retryDelay", () => {
  test("a failed renewal is tried again after 30 s, then twice as long, at most 5 min", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 20].map(retryDelay), [
      RETRY_RENEW_MS,
      60_000,
      120_000,
      240_000,
      MAX_RETRY_MS,
      MAX_RETRY_MS,
      MAX_RETRY_MS,
    ]);
  });
});

describe("srcsetOf", () => {
  test("both renditions by width; one when they are the same", () => {
    assert.equal(srcsetOf({ url128: "a", url512: "b" }), "a 128w, b 512w");
    assert.equal(srcsetOf({ url128: "a", url512: "a" }), "a 128w");
    assert.equal(srcsetOf(null), "");
  });
});
