// A streaming reply's text and last event id, kept (in sessionStorage) so that a reload
// resumes where it was. The storage is handed in, so Node's test runner can use a Map.

export const PROGRESS_PREFIX = "avatar-chat.progress.";

/** @param {() => Storage} storage the Storage to keep progress in, looked up at each use */
export function progressStore(storage) {
  return {
    save(replyId, text, lastEventId) {
      try {
        storage().setItem(PROGRESS_PREFIX + replyId, JSON.stringify({ text, lastEventId }));
      } catch {
        // storage full or off: a reload then resumes from the start of the reply
      }
    },
    /** {text, lastEventId}, or null when none was kept (or it is unreadable). */
    load(replyId) {
      try {
        return JSON.parse(storage().getItem(PROGRESS_PREFIX + replyId) || "null");
      } catch {
        return null;
      }
    },
    drop(replyId) {
      storage().removeItem(PROGRESS_PREFIX + replyId);
    },
  };
}

/**
 * Where following `reply` (GET .../messages/{id}/stream) starts from, given the progress
 * kept for it: with its last event id (sent as Last-Event-ID) and the text so far, or from
 * the beginning with no text.
 */
export function resumeFrom(reply, progress) {
  const lastEventId = progress?.lastEventId ?? null;
  const content = progress?.lastEventId ? progress.text : "";
  return {
    message: { ...reply, content, status: "streaming" },
    headers: progress?.lastEventId ? { "Last-Event-ID": progress.lastEventId } : {},
    lastEventId,
  };
}
