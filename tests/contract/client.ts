// A client team's first program, typed by the schema alone: its types are generated from
// the committed openapi.json by openapi-typescript (into ./schema.d.ts, next to this file
// when it is built), the calls made by openapi-fetch. Signs in with a token, creates an
// avatar, switches its persona (If-Match: the version it saw), sends a message and reads
// the conversation's history. Compiled with `tsc --strict` and run by node against a live
// server in tests/contract/test_typescript_client.py.
//
//   AVATAR_CHAT_URL=http://127.0.0.1:8000 AVATAR_CHAT_TOKEN=... node client.js
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

// Node's process, declared here rather than by @types/node (one dependency fewer).
declare const process: { env: Record<string, string | undefined>; exitCode?: number };

type Message = components["schemas"]["MessageRead"];

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check<T>(step: string, result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data === undefined) {
    throw new Error(`${step}: ${result.response.status} ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

async function main(): Promise<void> {
  const api = createClient<paths>({
    baseUrl: env("AVATAR_CHAT_URL"),
    headers: { Authorization: `Bearer ${env("AVATAR_CHAT_TOKEN")}` },
  });

  const avatar = check(
    "create the avatar",
    await api.POST("/avatars/me", { body: { name: "Ava", personality: "friendly", backstory: "" } }),
  );

  const switched = check(
    "switch the persona",
    await api.PATCH("/avatars/me/persona", {
      params: { header: { "If-Match": `"${avatar.version}"` } },
      body: { personality: "witty" },
    }),
  );

  const conversation = check("create a conversation", await api.POST("/conversations", { body: { mode: "companion" } }));
  const path = { conversation_id: conversation.id };

  // Asked as JSON: the 201 is the whole exchange (with Accept: text/event-stream, its events).
  const sent = check(
    "send a message",
    await api.POST("/conversations/{conversation_id}/messages", {
      params: { path, header: { "Idempotency-Key": "contract-client-1" } },
      headers: { Accept: "application/json" },
      body: { content: "Hello from TypeScript" },
    }),
  );
  if (!("user_message" in sent) || sent.assistant_message === null) {
    throw new Error(`send a message: no reply in ${JSON.stringify(sent)}`);
  }
  const reply = sent.assistant_message;

  const history: Message[] = [];
  let after = 0;
  for (;;) {
    const page = check(
      "read the history",
      await api.GET("/conversations/{conversation_id}/messages", {
        params: { path, query: { after, limit: 100 } },
      }),
    );
    history.push(...page.items);
    const last = page.items[page.items.length - 1];
    if (!page.has_more || last === undefined) break;
    after = last.seq;
  }

  // One line of JSON, read by the test.
  console.log(
    JSON.stringify({
      avatar_version: avatar.version,
      switched_version: switched.version,
      switched_personality: switched.personality,
      reply_personality: reply.personality,
      reply_persona_version: reply.persona_version,
      history: history.map((m) => ({ role: m.role, content: m.content, status: m.status })),
    }),
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
});
