// Data portability as the page tells it (portability.js): the names an export and a
// character card are saved under, the media type a card is sent as, a download's progress,
// what an import did, and what a refused export, import or card says.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  cardContentType,
  cardFailure,
  cardFilename,
  cardReplaceWarning,
  downloadProgress,
  exportFailure,
  exportFilename,
  filenameFromDisposition,
  formatBytes,
  importFailure,
  importResultText,
  isZipFile,
  waitPhrase,
} from "../../../backend/avatar_chat/web/static/portability.js";

/** An error as api.js makes it (ApiError's fields). */
const apiError = (status, code, message, { retryAfter = null, details = null } = {}) => ({
  status,
  code,
  message,
  retryAfter,
  details,
});

describe("cardFilename", () => {
  test("the avatar's name, as it is", () => {
    assert.equal(cardFilename("Ava", "png"), "Ava.png");
    assert.equal(cardFilename("Ava", "json"), "Ava.json");
    assert.equal(cardFilename("Captain Nemo", "png"), "Captain Nemo.png");
    assert.equal(cardFilename("Zoë 🌙", "png"), "Zoë 🌙.png");
  });

  test("nothing a file system refuses: no path, reserved characters, controls", () => {
    assert.equal(cardFilename("../../etc/passwd", "png"), "etc passwd.png");
    assert.equal(cardFilename('A<b>:c"d|e?f*g\\h', "png"), "A b c d e f g h.png");
    assert.equal(cardFilename("Tab\there\nnewline", "json"), "Tab here newline.json");
  });

  test("not hidden, no trailing dots or spaces, at most 80 characters", () => {
    assert.equal(cardFilename(".hidden", "png"), "hidden.png");
    assert.equal(cardFilename("  Ava...  ", "png"), "Ava.png");
    const long = cardFilename("x".repeat(200), "png");
    assert.equal(long, `${"x".repeat(80)}.png`);
    // Characters, not UTF-16 units: an emoji is never cut in half.
    assert.equal(cardFilename("🌙".repeat(100), "png"), `${"🌙".repeat(80)}.png`);
  });

  test("a name with nothing left is character-card", () => {
    for (const name of ["", "   ", "...", "///", null, undefined]) {
      assert.equal(cardFilename(name, "png"), "character-card.png");
    }
  });
});

describe("filenameFromDisposition", () => {
  test("the quoted filename the API sends", () => {
    assert.equal(
      filenameFromDisposition('attachment; filename="avatar-chat-export-20261207-183000.zip"'),
      "avatar-chat-export-20261207-183000.zip",
    );
  });

  test("filename* (UTF-8) before filename, a bare token too", () => {
    assert.equal(
      filenameFromDisposition(`attachment; filename="Zoe.png"; filename*=UTF-8''Zo%C3%AB.png`),
      "Zoë.png",
    );
    assert.equal(filenameFromDisposition("attachment; filename=card.json"), "card.json");
    assert.equal(filenameFromDisposition('attachment; filename="say \\"hi\\".png"'), "say hi .png");
  });

  test("never a path", () => {
    assert.equal(filenameFromDisposition('attachment; filename="../../x.zip"'), "x.zip");
    assert.equal(filenameFromDisposition('attachment; filename="C:\\\\temp\\\\x.zip"'), "x.zip");
  });

  test("none: null", () => {
    for (const value of [null, undefined, "", "attachment", 'attachment; filename=""', "inline; filename=..."]) {
      assert.equal(filenameFromDisposition(value), null, value);
    }
  });

  test("broken percent-encoding falls back to the plain filename", () => {
    assert.equal(filenameFromDisposition(`attachment; filename*=UTF-8''%E0%A4%A; filename="a.zip"`), "a.zip");
  });
});

describe("exportFilename", () => {
  test("the API's pattern, in UTC", () => {
    assert.equal(exportFilename(Date.parse("2026-12-07T18:30:05Z")), "avatar-chat-export-20261207-183005.zip");
    assert.equal(exportFilename(Date.parse("2027-01-02T03:04:05.678Z")), "avatar-chat-export-20270102-030405.zip");
  });
});

describe("cardContentType", () => {
  test("by the file's extension, in any case", () => {
    assert.equal(cardContentType("Ava.png"), "image/png");
    assert.equal(cardContentType("AVA.PNG", ""), "image/png");
    assert.equal(cardContentType("card.json", ""), "application/json");
    assert.equal(cardContentType("my.card.Json", "text/plain"), "application/json");
  });

  test("no known extension: by the type the browser gave", () => {
    assert.equal(cardContentType("card", "image/png"), "image/png");
    assert.equal(cardContentType("card", "application/json; charset=utf-8"), "application/json");
  });

  test("anything else: null", () => {
    assert.equal(cardContentType("card.webp", "image/webp"), null);
    assert.equal(cardContentType("card.txt", "text/plain"), null);
    assert.equal(cardContentType("png", ""), null);
    assert.equal(cardContentType("", ""), null);
    assert.equal(cardContentType(undefined, undefined), null);
  });
});

describe("isZipFile", () => {
  test("a .zip, or typed as one", () => {
    assert.equal(isZipFile("avatar-chat-export-20261207-183005.zip", ""), true);
    assert.equal(isZipFile("EXPORT.ZIP"), true);
    assert.equal(isZipFile("export", "application/zip"), true);
    assert.equal(isZipFile("export", "application/x-zip-compressed"), true);
  });

  test("anything else is not", () => {
    assert.equal(isZipFile("export.json", "application/json"), false);
    assert.equal(isZipFile("zip", ""), false);
    assert.equal(isZipFile("", ""), false);
  });
});

describe("formatBytes and downloadProgress", () => {
  test("a size in a few characters", () => {
    assert.deepEqual([0, 1, 999].map(formatBytes), ["0 B", "1 B", "999 B"]);
    assert.equal(formatBytes(1234), "1.2 kB");
    assert.equal(formatBytes(45_678), "46 kB");
    assert.equal(formatBytes(3_456_789), "3.5 MB");
    assert.equal(formatBytes(2_000_000_000), "2.0 GB");
    for (const value of [null, undefined, -5, Number.NaN, "x"]) assert.equal(formatBytes(value), "0 B");
  });

  test("nothing yet: preparing; then how much came (of how much, when known)", () => {
    assert.equal(downloadProgress(0), "Preparing your archive…");
    assert.equal(downloadProgress(1_234_567), "Downloading your archive… 1.2 MB");
    assert.equal(downloadProgress(1_234_567, 5_000_000), "Downloading your archive… 1.2 MB of 5.0 MB");
  });
});

describe("waitPhrase", () => {
  test("seconds, minutes (rounded up), then hours", () => {
    assert.equal(waitPhrase(1), "in 1 second");
    assert.equal(waitPhrase(5), "in 5 seconds");
    assert.equal(waitPhrase(59), "in 59 seconds");
    assert.equal(waitPhrase(60), "in 1 minute");
    assert.equal(waitPhrase(61), "in 2 minutes");
    assert.equal(waitPhrase(3599), "in 60 minutes");
    assert.equal(waitPhrase(3600), "in about 1 hour");
    assert.equal(waitPhrase(7 * 3600 - 10), "in about 7 hours");
  });

  test("never less than a second; unknown: null", () => {
    assert.equal(waitPhrase(0), "in 1 second");
    assert.equal(waitPhrase(0.2), "in 1 second");
    for (const value of [null, undefined, Number.NaN, "soon"]) assert.equal(waitPhrase(value), null);
  });
});

describe("exportFailure", () => {
  test("another export under way: try again once it is done, Retry offered", () => {
    const failure = exportFailure(
      apiError(429, "export_in_progress", "An export of your data is already being made.", { retryAfter: 240 }),
    );
    assert.equal(
      failure.text,
      "An export of your data is already being made (in another tab or on another device). " +
        "Try again once it is done (at the latest in 4 minutes).",
    );
    assert.equal(failure.retry, true);
  });

  test("the day's exports used: when the next one is allowed, no Retry", () => {
    const failure = exportFailure(apiError(429, "export_limited", "…", { retryAfter: 5 * 3600 }));
    assert.equal(
      failure.text,
      "You have exported your data as many times as a day allows. You can export again in about 5 hours.",
    );
    assert.equal(failure.retry, false);
    // No Retry-After: the details' retry_after, else tomorrow.
    const fromDetails = apiError(429, "export_limited", "…", { details: { retry_after: 90 } });
    assert.match(exportFailure(fromDetails).text, /in 2 minutes\.$/);
    assert.match(exportFailure(apiError(429, "export_limited", "…")).text, /export again tomorrow\.$/);
  });

  test("503 busy (after the automatic retries): try again shortly, Retry offered", () => {
    const failure = exportFailure(apiError(503, "busy", "This server is busy making exports.", { retryAfter: 5 }));
    assert.equal(failure.text, "The server is too busy to export your data right now. Try again in 5 seconds.");
    assert.equal(failure.retry, true);
    assert.match(exportFailure(apiError(503, "database_unavailable", "…")).text, /Try again in a minute\.$/);
  });

  test("the network, a cut download, anything else", () => {
    assert.deepEqual(exportFailure(apiError(0, "network_error", "Cannot reach the server.")), {
      text: "Cannot reach the server.",
      retry: true,
    });
    assert.deepEqual(exportFailure({ status: -1, code: "download_cut", message: "cut" }), {
      text: "The download stopped before the archive was complete. Try again.",
      retry: true,
    });
    assert.deepEqual(exportFailure(apiError(500, "internal_error", "Something broke.")), {
      text: "Exporting your data failed: Something broke.",
      retry: true,
    });
    assert.equal(exportFailure(apiError(403, "forbidden", "No.")).retry, false);
  });
});

describe("importFailure", () => {
  test("a broken or unsafe archive: the API's message, and which file when it says", () => {
    assert.deepEqual(
      importFailure(
        apiError(422, "archive_invalid", "A conversation file is not valid JSON", {
          details: { file: "conversations/1.json" },
        }),
      ),
      {
        text: "This archive cannot be imported. A conversation file is not valid JSON (conversations/1.json).",
        retry: false,
      },
    );
    assert.equal(
      importFailure(apiError(422, "archive_unsafe", "The archive holds a path outside it.")).text,
      "This archive cannot be imported. The archive holds a path outside it.",
    );
    // The file named once only.
    const named = apiError(422, "archive_invalid", "export.json is not JSON.", { details: { file: "export.json" } });
    assert.equal(importFailure(named).text, "This archive cannot be imported. export.json is not JSON.");
  });

  test("another format version: the API's message", () => {
    const message = "This archive is of format version 2; this server reads version 1.";
    const failure = importFailure(
      apiError(422, "archive_version_unsupported", message, { details: { version: 2, supported: [1] } }),
    );
    assert.equal(
      failure.text,
      "This archive cannot be imported. This archive is of format version 2; this server reads version 1.",
    );
    assert.equal(failure.retry, false);
  });

  test("too large, not a zip", () => {
    assert.deepEqual(importFailure(apiError(413, "payload_too_large", "The archive is over 100 MiB.")), {
      text: "This file is too large to import. The archive is over 100 MiB.",
      retry: false,
    });
    assert.equal(
      importFailure(apiError(415, "unsupported_media_type", "Send application/zip.")).text,
      "This is not an export archive: choose the .zip that “Export my data” saved.",
    );
  });

  test("busy: try again, Retry-After in words", () => {
    assert.deepEqual(importFailure(apiError(503, "busy", "Busy.", { retryAfter: 30 })), {
      text: "The server is too busy to import right now. Try again in 30 seconds.",
      retry: true,
    });
  });

  test("the network, a rate limit, anything else", () => {
    const offline = apiError(0, "network_error", "Cannot reach the server.");
    assert.equal(importFailure(offline).text, "Cannot reach the server.");
    assert.equal(
      importFailure(apiError(429, "import_in_progress", "An import is under way", { retryAfter: 20 })).text,
      "An import is under way. You can try again in 20 seconds.",
    );
    assert.deepEqual(importFailure(apiError(500, "internal_error", "Something broke.")), {
      text: "Importing failed: Something broke.",
      retry: true,
    });
  });
});

describe("importResultText", () => {
  const result = (fields) => ({
    archive_sha256: "ab".repeat(32),
    imported_at: "2026-12-07T18:30:00Z",
    already_imported: false,
    conversations: 3,
    messages: 120,
    usage_records: 40,
    avatar: "none",
    ...fields,
  });

  test("what came in, and what became of the avatar", () => {
    assert.equal(importResultText(result({})), "Imported 3 conversations, 120 messages.");
    assert.equal(
      importResultText(result({ avatar: "imported" })),
      "Imported 3 conversations, 120 messages and the archive's avatar.",
    );
    assert.equal(
      importResultText(result({ avatar: "replaced" })),
      "Imported 3 conversations, 120 messages; your avatar was replaced with the archive's.",
    );
    assert.equal(
      importResultText(result({ avatar: "kept" })),
      "Imported 3 conversations, 120 messages; your own avatar was kept.",
    );
  });

  test("one of each, none at all", () => {
    assert.equal(importResultText(result({ conversations: 1, messages: 1 })), "Imported 1 conversation, 1 message.");
    assert.equal(importResultText(result({ conversations: 0, messages: 0 })), "Imported 0 conversations, 0 messages.");
  });

  test("imported before: nothing changed", () => {
    assert.equal(
      importResultText(result({ already_imported: true, avatar: "kept" })),
      "This archive was already imported; nothing changed.",
    );
  });
});

describe("cards", () => {
  test("the warning before a card replaces the avatar; none when there is none", () => {
    assert.equal(
      cardReplaceWarning("Ava"),
      "This replaces Ava with the card's character: name, personality, backstory, and the image when the " +
        "card has one. Your conversations stay.",
    );
    assert.equal(cardReplaceWarning(null), null);
    assert.equal(cardReplaceWarning(""), null);
  });

  test("a refused card: the API's message", () => {
    assert.equal(
      cardFailure(apiError(422, "card_invalid", "The PNG holds no character card")),
      "This character card cannot be used: The PNG holds no character card.",
    );
    assert.equal(
      cardFailure(apiError(413, "payload_too_large", "A card is at most 8 MiB.")),
      "This card is too large. A card is at most 8 MiB.",
    );
    assert.equal(
      cardFailure(apiError(415, "unsupported_media_type", "…")),
      "Choose a character card: a .png with a card in it, or a .json.",
    );
    assert.equal(cardFailure(apiError(0, "network_error", "Cannot reach the server.")), "Cannot reach the server.");
    assert.equal(
      cardFailure(apiError(429, "image_rate_limited", "Too many image uploads", { retryAfter: 40 })),
      "Too many image uploads. You can try again in 40 seconds.",
    );
    assert.equal(
      cardFailure(apiError(500, "internal_error", "Something broke.")),
      "Creating the avatar from the card failed: Something broke.",
    );
  });
});
