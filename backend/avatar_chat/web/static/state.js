// What the page knows, in one place: the signed-in session's API client, the avatar, the
// conversations and the messages shown. Every other module reads and writes this one
// object; nothing else is kept in module variables.

/** Messages fetched at a time (a conversation opened, "Show earlier messages"). */
export const PAGE = 50;

export function createState() {
  return {
    auth: null, // auth.js: the sign-in config.json names
    api: null, // api.js: the documented API with this session's token
    personalities: null, // {values, initial}: PersonalityType from GET /openapi.json, read once
    avatar: null,
    etag: null, // the avatar's ETag: If-Match of a persona switch
    // The avatar's image: {url128, url512, expiresAt (ms)} from GET /avatars/me/image (signed
    // URLs, renewed before they expire), null: none. Every change is told as a
    // document "avatar-image" event whose detail is this (avatarimage.js).
    avatarImage: null,
    imageRenewal: null, // {path, refresh, expire, failures, receivedAt, loading}: the image read, its timers (avatarimage.js)
    history: null, // the persona history dialog, open: {items, nextCursor, highlight, opener} (history.js)
    conversations: [], // newest first
    nextCursor: null,
    conversation: null,
    messages: [], // the current conversation's, by seq (messages.js)
    hasEarlier: false,
    streaming: null, // {replyId, controller} while a reply streams in
    lastSend: null, // {conversationId, content, key, userMessageId}: what Retry resends
    variants: {}, // by user message id: its replies' alternatives, {items, current_id} (exchanges.js)
    editing: null, // the id of the message whose edit form is open
    countdown: null, // a 429's interval timer while Send is held back
    retryAction: null, // what the notice's Retry button does
    usage: null, // GET /me/usage: the plan, and what was used of it (meter.js)
    usageRead: null, // {again} while GET /me/usage is under way; again: read once more after
  };
}

export const state = createState();
