// What the avatar panel and the account say (avatarwords.js): a refused or failed image
// upload or removal in the API's own words (413, 415, 422, 429, 503, 412), a restore, what
// deleting the account deletes, and a DELETE /me that may have done part of it.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  changedElsewhere,
  deleteAccountFailure,
  deletionList,
  imageFailure,
  restoreChangedMeanwhile,
  restoreFailure,
} from "../../../backend/avatar_chat/web/static/avatarwords.js";

const apiError = (status, code, message, { retryAfter = null, details = null } = {}) => ({
  status,
  code,
  message,
  retryAfter,
  details,
});

describe("imageFailure", () => {
  test("413 payload_too_large: the API's words, then what to do", () => {
    assert.deepEqual(imageFailure(apiError(413, "payload_too_large", "The body is over 5242880 bytes")), {
      text: "The body is over 5242880 bytes. Choose a smaller image.",
      retry: false,
    });
  });
  test("415 unsupported_image_type: as the API says it", () => {
    assert.deepEqual(imageFailure(apiError(415, "unsupported_image_type", "Upload a PNG, JPEG or WebP image.")), {
      text: "Upload a PNG, JPEG or WebP image.",
      retry: false,
    });
  });
  test("422 image_undecodable, image_too_many_pixels", () => {
    assert.equal(
      imageFailure(apiError(422, "image_undecodable", "The image could not be decoded.")).text,
      "The image could not be decoded. Choose another image.",
    );
    const pixels = "The image has too many pixels: one like it may have at most 40 megapixels.";
    assert.equal(
      imageFailure(apiError(422, "image_too_many_pixels", pixels)).text,
      `${pixels} Choose a smaller image.`,
    );
  });
  test("429 image_rate_limited: when to upload again, from Retry-After or the details", () => {
    const limited = "Too many image uploads this minute; retry later.";
    assert.deepEqual(imageFailure(apiError(429, "image_rate_limited", limited, { retryAfter: 42 })), {
      text: `${limited} You can upload again in 42 seconds.`,
      retry: true,
    });
    assert.equal(
      imageFailure(apiError(429, "image_rate_limited", limited, { details: { retry_after: 5 } })).text,
      `${limited} You can upload again in 5 seconds.`,
    );
    assert.equal(imageFailure(apiError(429, "image_rate_limited", limited)).text, limited);
  });
  test("503 busy (after the automatic retries)", () => {
    const busy = "Too many images are being processed right now; retry shortly.";
    assert.deepEqual(imageFailure(apiError(503, "busy", busy, { retryAfter: 1 })), {
      text: `${busy} Try again in 1 second.`,
      retry: true,
    });
  });
  test("412: changed elsewhere, send it again", () => {
    assert.equal(
      imageFailure(apiError(412, "precondition_failed", "If-Match does not match")).text,
      changedElsewhere("Send the image again."),
    );
    assert.match(changedElsewhere("X."), /^Your avatar was changed elsewhere; this shows it as it is now\. X\.$/);
  });
  test("the network, anything else", () => {
    assert.deepEqual(imageFailure(apiError(0, "network_error", "Cannot reach the server.")), {
      text: "Cannot reach the server.",
      retry: true,
    });
    assert.equal(
      imageFailure(apiError(404, "avatar_not_found", "You have no avatar yet"), "Removing the image").text,
      "Removing the image failed: You have no avatar yet.",
    );
  });
});

describe("restore", () => {
  test("a version no longer there", () => {
    assert.match(
      restoreFailure(apiError(404, "avatar_version_not_found", "No such version."), 3),
      /^Version 3 is not in your avatar's history any more\. No such version\.$/,
    );
  });
  test("anything else", () => {
    assert.equal(restoreFailure(apiError(500, "internal_error", "Broke"), 2), "Restoring version 2 failed: Broke.");
  });
  test("a 412: what it is now, and that nothing was restored", () => {
    const text = restoreChangedMeanwhile(1, 5);
    assert.match(text, /changed meanwhile \(it is now version 5\); nothing was restored/);
    assert.match(text, /restore version 1 again/);
  });
});

describe("deleting the account", () => {
  test("names everything it deletes", () => {
    const list = deletionList("Ava").join("\n");
    for (const word of ["Ava", "image", "persona", "conversation", "message", "usage", "account"]) {
      assert.match(list, new RegExp(word, "i"), word);
    }
    assert.match(deletionList(null)[0], /Your avatar, if you made one/);
  });
  test("a 503 may have done part: finish it", () => {
    for (const code of ["storage_unavailable", "auth_unavailable"]) {
      const failure = deleteAccountFailure(apiError(503, code, "Storage is unavailable; retry shortly."));
      assert.equal(failure.finish, true);
      assert.match(
        failure.text,
        /^Storage is unavailable; retry shortly\. Part of your account may already be deleted/,
      );
    }
    assert.equal(deleteAccountFailure(apiError(0, "network_error", "Cannot reach the server.")).finish, true);
  });
  test("anything else", () => {
    assert.deepEqual(deleteAccountFailure(apiError(400, "bad_request", "No")), {
      text: "Deleting your account failed: No.",
      finish: false,
    });
  });
});
