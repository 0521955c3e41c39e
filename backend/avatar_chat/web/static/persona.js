// The avatar: create it, show it (its image: avatarimage.js), switch its persona
// (PATCH /avatars/me/persona with If-Match from the ETag; a 412 shows the avatar as it is now).

import { ApiError } from "./api.js";
import { syncImage } from "./avatarimage.js";
import { openChat } from "./conversations.js";
import { $, busy } from "./dom.js";
import { clearNotice, describe, notify } from "./notice.js";
import { personalitiesFrom, personalityLabel } from "./personalities.js";
import { start } from "./signin.js";
import { state } from "./state.js";

/** The personalities from the API's schema, read once per page load. */
export async function loadPersonalities() {
  if (state.personalities) return state.personalities;
  const { body } = await state.api.get("/openapi.json");
  state.personalities = personalitiesFrom(body);
  fillPersonalities($("avatar-personality"), state.personalities.initial);
  return state.personalities;
}

function fillPersonalities(select, selected) {
  select.replaceChildren(
    ...(state.personalities?.values ?? []).map((p) => {
      const option = new Option(personalityLabel(p), p);
      option.selected = p === selected;
      return option;
    }),
  );
}

/** Shows `avatar` (an answer of the API, `response` with its ETag) as the user's. */
export function setAvatar(avatar, response) {
  state.avatar = avatar;
  state.etag = response?.headers.get("ETag") ?? `"${avatar.version}"`;
  $("avatar-name-heading").textContent = avatar.name;
  $("avatar-version").textContent = String(avatar.version);
  fillPersonalities($("persona"), avatar.personality);
  syncImage(); // its image's URLs read again when image_path changed (avatarimage.js)
}

/** The signed-in user's avatar, or null when they have none yet. */
export async function loadAvatar() {
  try {
    const { body, response } = await state.api.get("/avatars/me");
    setAvatar(body, response);
    return body;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

export function wireAvatar() {
  $("create-avatar").addEventListener("submit", (event) => {
    event.preventDefault();
    busy($("create-avatar-submit"), async () => {
      const body = {
        name: $("avatar-name").value.trim(),
        personality: $("avatar-personality").value,
      };
      const backstory = $("avatar-backstory").value.trim();
      if (backstory) body.backstory = backstory;
      try {
        const { body: avatar, response } = await state.api.post("/avatars/me", body);
        setAvatar(avatar, response);
        clearNotice();
        await openChat();
      } catch (err) {
        if (err instanceof ApiError && err.code === "avatar_exists") return start();
        if (err.status !== 401) notify(describe(err, "Creating the avatar"));
      }
    });
  });

  $("persona").addEventListener("change", async () => {
    const select = $("persona");
    const personality = select.value;
    select.disabled = true;
    $("persona-status").textContent = "Switching…";
    try {
      const { body, response } = await state.api.patch(
        "/avatars/me/persona",
        { personality },
        { headers: { "If-Match": state.etag } },
      );
      setAvatar(body, response);
      $("persona-status").textContent = `Now ${body.personality} (version ${body.version}); the next reply uses it.`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        await loadAvatar().catch(() => {});
        $("persona-status").textContent = "";
        notify("Your avatar was changed elsewhere; this shows it as it is now. Choose again.", { kind: "info" });
      } else {
        fillPersonalities(select, state.avatar?.personality);
        $("persona-status").textContent = "";
        if (err.status !== 401) notify(describe(err, "Switching the persona"));
      }
    } finally {
      select.disabled = false;
    }
  });
}
