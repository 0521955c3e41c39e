// The persona history as the page tells it (personadiff.js): what changed from the version
// before (name, personality, backstory, in a few words), each version paired with the one
// before it across pages, and when it was made.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  QUOTE_MAX,
  backstoryChange,
  changeSummary,
  personaChanges,
  shorten,
  versionWhen,
  withPrevious,
  wordChange,
} from "../../../backend/avatar_chat/web/static/personadiff.js";

const v = (version, name, personality, backstory = "", changed_at = "2026-03-12T14:05:00Z") => ({
  version,
  name,
  personality,
  backstory,
  changed_at,
});

describe("changeSummary", () => {
  test("the first version: what it was created as", () => {
    assert.equal(changeSummary(null, v(1, "Ava", "friendly")), "Created as Ava (friendly).");
  });
  test("the oldest kept version when older ones are not kept", () => {
    assert.equal(
      changeSummary(null, v(7, "Ava", "witty")),
      "Ava (witty); the versions before it are not kept.",
    );
  });
  test("the version before on a page not loaded yet", () => {
    assert.match(changeSummary(undefined, v(3, "Ava", "witty")), /older versions/);
  });
  test("a persona switch", () => {
    assert.equal(changeSummary(v(1, "Ava", "friendly"), v(2, "Ava", "witty")), "Personality: friendly → witty.");
  });
  test("several fields at once, in order", () => {
    assert.equal(
      changeSummary(v(1, "Ava", "friendly", "A sailor."), v(2, "Mira", "caring", "A sailor.")),
      "Name: Ava → Mira; personality: friendly → caring.",
    );
  });
  test("nothing of the persona changed (an image, say)", () => {
    assert.match(changeSummary(v(2, "Ava", "witty", "x"), v(3, "Ava", "witty", "x")), /unchanged/);
  });
  test("a backstory edited in the dashboard reads like any other change", () => {
    assert.equal(
      changeSummary(
        v(2, "Ava", "witty", "Grew up in Lisbon."),
        v(3, "Ava", "witty", "Grew up in Lisbon. Edited in the dashboard."),
      ),
      "Backstory: added “…Edited in the dashboard.”",
    );
  });
});

describe("personaChanges", () => {
  test("none without a version before", () => {
    assert.deepEqual(personaChanges(null, v(1, "Ava", "friendly")), []);
  });
  test("name, personality, backstory", () => {
    assert.deepEqual(personaChanges(v(1, "A", "witty", ""), v(2, "B", "caring", "Hi.")), [
      "name: A → B",
      "personality: witty → caring",
      "backstory added: “Hi.”",
    ]);
  });
});

describe("backstoryChange", () => {
  test("unchanged (spaces around it do not count)", () => {
    assert.equal(backstoryChange("A sailor.", " A sailor. "), null);
    assert.equal(backstoryChange("", ""), null);
  });
  test("added, removed", () => {
    assert.equal(backstoryChange("", "A sailor."), "backstory added: “A sailor.”");
    assert.equal(backstoryChange("A sailor.", ""), "backstory removed");
  });
  test("words replaced in a long backstory: only the changed ones, the shared ones marked …", () => {
    const before = "A sailor from Lisbon who loves maps, old ships and the long evenings of the harbour.";
    assert.equal(backstoryChange(before, before.replace("Lisbon", "Porto")), "backstory: “…Lisbon…” → “…Porto…”");
  });
  test("words replaced in a short one: both whole", () => {
    assert.equal(backstoryChange("Day 23.", "Day 24."), "backstory: “Day 23.” → “Day 24.”");
    assert.equal(
      backstoryChange("Grew up at sea.", "Raised on land."),
      "backstory: “Grew up at sea.” → “Raised on land.”",
    );
  });
  test("words taken out, words put in", () => {
    assert.equal(backstoryChange("A quiet old sailor.", "A sailor."), "backstory: removed “…quiet old…”");
    assert.equal(backstoryChange("A sailor.", "A sailor. Loves maps."), "backstory: added “…Loves maps.”");
  });
  test("only the spacing changed", () => {
    assert.equal(backstoryChange("A  sailor.", "A sailor."), "backstory reworded (spacing only)");
  });
  test("a long change is quoted short", () => {
    const long = "word ".repeat(100).trim();
    const text = backstoryChange("", long);
    assert.ok(text.length < QUOTE_MAX + 30, text);
    assert.ok(text.endsWith("…”"), text);
  });
});

describe("wordChange", () => {
  test("what both share before and after is left out", () => {
    assert.deepEqual(wordChange("a b c d", "a x d"), { removed: "b c", added: "x", before: true, after: true });
    assert.deepEqual(wordChange("a", "a b"), { removed: "", added: "b", before: true, after: false });
    assert.deepEqual(wordChange("a a", "a a a"), { removed: "", added: "a", before: true, after: false });
  });
});

describe("shorten", () => {
  test("cut on a word, marked", () => {
    assert.equal(shorten("short"), "short");
    assert.equal(shorten("one two three four", 12), "one two…");
    assert.equal(shorten("abcdefghijklmnop", 6), "abcde…");
    assert.equal(shorten("🌙".repeat(10), 4), "🌙🌙🌙…");
  });
});

describe("withPrevious", () => {
  const items = [v(3, "A", "witty"), v(2, "A", "caring"), v(1, "A", "friendly")];
  test("each with the one after it in the list (older)", () => {
    const pairs = withPrevious(items, true);
    assert.deepEqual(
      pairs.map((p) => [p.version.version, p.before?.version ?? p.before]),
      [
        [3, 2],
        [2, 1],
        [1, null],
      ],
    );
  });
  test("the oldest loaded, with older pages left: not known yet", () => {
    assert.equal(withPrevious(items, false)[2].before, undefined);
  });
});

describe("versionWhen", () => {
  test("in the reader's locale and time zone", () => {
    const when = versionWhen("2026-03-12T14:05:00Z", { locale: "en-GB", timeZone: "UTC" });
    assert.match(when, /12 Mar 2026/);
    assert.match(when, /14:05/);
    assert.match(versionWhen("2026-03-12T14:05:00Z", { locale: "en-GB", timeZone: "Asia/Tokyo" }), /23:05/);
  });
  test("not a date: as it came", () => {
    assert.equal(versionWhen("soon", { locale: "en-GB" }), "soon");
  });
});
