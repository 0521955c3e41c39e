// The event-stream wire format, as EventSource reads it: bytes in, {event, data, id} out.
// No DOM and no network: also read by Node's test runner (tests/web/js/).

/**
 * One line of the event-stream format applied to the event being read: the event as it is
 * after the line, and the finished event when the line was the blank one that ends it.
 * `pending` is {event, data: [lines], id}; `finished` is {event, data (parsed JSON), id}.
 */
export function readLine(pending, line) {
  if (line === "") {
    const finished = pending.data.length
      ? { event: pending.event || "message", data: JSON.parse(pending.data.join("\n")), id: pending.id }
      : null;
    return { pending: emptyEvent(), finished };
  }
  if (line.startsWith(":")) return { pending, finished: null }; // a comment (keep-alive)
  const colon = line.indexOf(":");
  const field = colon < 0 ? line : line.slice(0, colon);
  let text = colon < 0 ? "" : line.slice(colon + 1);
  if (text.startsWith(" ")) text = text.slice(1);
  if (field === "event") return { pending: { ...pending, event: text }, finished: null };
  if (field === "data") return { pending: { ...pending, data: [...pending.data, text] }, finished: null };
  if (field === "id") return { pending: { ...pending, id: text }, finished: null };
  return { pending, finished: null };
}

export function emptyEvent() {
  return { event: "", data: [], id: null };
}

/**
 * The complete lines at the start of `buffer` (CR, LF or CRLF) and what is left after them.
 * A CR at the very end is left in the buffer: its LF may be in the next chunk.
 */
export function splitLines(buffer) {
  const lines = [];
  let end;
  while ((end = buffer.search(/\r\n|\n|\r/)) >= 0) {
    if (buffer[end] === "\r" && end + 1 === buffer.length) break; // "\r\n" may be split
    lines.push(buffer.slice(0, end));
    buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
  }
  return { lines, rest: buffer };
}

/** Server-sent events from a byte stream (a fetch Response's body). */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let pending = emptyEvent();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const { lines, rest } = splitLines(buffer + value);
      buffer = rest;
      for (const line of lines) {
        const read = readLine(pending, line);
        pending = read.pending;
        if (read.finished) yield read.finished;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
