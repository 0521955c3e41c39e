// The personalities an avatar can have, as the API declares them: the `PersonalityType`
// enum of its OpenAPI schema (GET /openapi.json). The page keeps no list of its own.
// Pure: also read by Node's test runner (tests/web/js/).

export const SCHEMA = "PersonalityType";

/**
 * {values, initial} from an OpenAPI document: the enum's values in its order, and the one
 * a new avatar starts with (AvatarCreate's default, else the first). Throws when the
 * document does not declare them.
 */
export function personalitiesFrom(openapi) {
  const schemas = openapi?.components?.schemas ?? {};
  const values = schemas[SCHEMA]?.enum;
  if (!Array.isArray(values) || values.length === 0 || !values.every((v) => typeof v === "string")) {
    throw new Error(`The API's schema declares no ${SCHEMA} values.`);
  }
  const declared = schemas.AvatarCreate?.properties?.personality?.default;
  return { values: [...values], initial: values.includes(declared) ? declared : values[0] };
}

/** "witty" -> "Witty": what the select shows. */
export function personalityLabel(value) {
  return value[0].toUpperCase() + value.slice(1);
}
