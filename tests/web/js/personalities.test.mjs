// The personalities come from the API's OpenAPI schema (personalities.js), not from a
// list of the client's own. tests/web/test_js_units.py also checks them against the app's
// real schema.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { personalitiesFrom, personalityLabel } from "../../../backend/avatar_chat/web/static/personalities.js";

const schema = (values, initial) => ({
  components: {
    schemas: {
      PersonalityType: { type: "string", enum: values },
      AvatarCreate: { properties: { personality: { $ref: "#/components/schemas/PersonalityType", default: initial } } },
    },
  },
});

describe("personalitiesFrom", () => {
  test("the enum's values in its order, and AvatarCreate's default first chosen", () => {
    assert.deepEqual(personalitiesFrom(schema(["calm", "bold", "wry"], "bold")), {
      values: ["calm", "bold", "wry"],
      initial: "bold",
    });
  });

  test("without a usable default: the first value", () => {
    assert.equal(personalitiesFrom(schema(["calm", "bold"], undefined)).initial, "calm");
    assert.equal(personalitiesFrom(schema(["calm", "bold"], "gone")).initial, "calm");
  });

  test("a schema without the values is refused", () => {
    for (const doc of [null, {}, { components: { schemas: {} } }, schema([], "x"), schema([1, 2], 1)]) {
      assert.throws(() => personalitiesFrom(doc), /PersonalityType/);
    }
  });

  test("the app's own schema, when the Python test hands it over", { skip: process.env.AVATAR_CHAT_OPENAPI ? false : "given by tests/web/test_js_units.py" }, () => {
    const openapi = JSON.parse(readFileSync(process.env.AVATAR_CHAT_OPENAPI, "utf8"));
    const expected = JSON.parse(process.env.AVATAR_CHAT_PERSONALITIES);
    const { values, initial } = personalitiesFrom(openapi);
    assert.deepEqual(values, expected);
    assert.ok(values.includes(initial));
  });
});

test("personalityLabel", () => {
  assert.equal(personalityLabel("witty"), "Witty");
});
