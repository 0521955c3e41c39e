// The event-stream format (sse.js): lines, fields, event ids, chunks split anywhere.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { emptyEvent, readEvents, readLine, splitLines } from "../../../backend/avatar_chat/web/static/sse.js";

/** A byte stream that delivers `chunks` (strings) one read at a time. */
function body(chunks) {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
}

async function collect(chunks) {
  const events = [];
  for await (const event of readEvents(body(chunks))) events.push(event);
  return events;
}

describe("splitLines", () => {
  test("splits on LF, CRLF and CR, and keeps the unfinished rest", () => {
    assert.deepEqual(splitLines("a\nb\r\nc\rd"), { lines: ["a", "b", "c"], rest: "d" });
  });

  test("keeps a CR at the very end: its LF may come in the next chunk", () => {
    assert.deepEqual(splitLines("a\r"), { lines: [], rest: "a\r" });
    assert.deepEqual(splitLines("a\r" + "\nb\n"), { lines: ["a", "b"], rest: "" });
  });
});

describe("readLine", () => {
  test("gathers the fields and yields the event at the blank line", () => {
    let pending = emptyEvent();
    for (const line of ["event: delta", "id: 42", 'data: {"content":', 'data: "hi"}']) {
      const read = readLine(pending, line);
      assert.equal(read.finished, null);
      pending = read.pending;
    }
    const { finished, pending: after } = readLine(pending, "");
    assert.deepEqual(finished, { event: "delta", data: { content: "hi" }, id: "42" });
    assert.deepEqual(after, emptyEvent());
  });

  test("comments, unknown fields and a blank line without data yield nothing", () => {
    let pending = emptyEvent();
    for (const line of [": keep-alive", "retry: 1000", "event: ping"]) pending = readLine(pending, line).pending;
    assert.equal(readLine(pending, "").finished, null);
  });

  test("one space after the colon is dropped, no more; a field without colon is empty", () => {
    const a = readLine(emptyEvent(), "id:  7").pending;
    assert.equal(a.id, " 7");
    const b = readLine(emptyEvent(), "id").pending;
    assert.equal(b.id, "");
  });

  test("an event without a name is a message", () => {
    const pending = readLine(emptyEvent(), "data: 1").pending;
    assert.deepEqual(readLine(pending, "").finished, { event: "message", data: 1, id: null });
  });
});

describe("readEvents", () => {
  const stream = 'event: delta\nid: 1\ndata: {"content": "a"}\n\n: ping\n\nevent: done\ndata: {"id": "r"}\n\n';

  test("reads the events of a stream, with their ids", async () => {
    assert.deepEqual(await collect([stream]), [
      { event: "delta", data: { content: "a" }, id: "1" },
      { event: "done", data: { id: "r" }, id: null },
    ]);
  });

  test("reads the same events whatever the chunks, CRLF split included", async () => {
    const crlf = stream.replaceAll("\n", "\r\n");
    const expected = await collect([stream]);
    for (const text of [stream, crlf]) {
      const bytes = [...text];
      assert.deepEqual(await collect(bytes), expected); // one character at a time
      for (let cut = 1; cut < text.length; cut += 7) {
        assert.deepEqual(await collect([text.slice(0, cut), text.slice(cut)]), expected, `cut at ${cut}`);
      }
    }
  });

  test("multi-byte characters split across chunks arrive whole", async () => {
    const bytes = new TextEncoder().encode('data: {"content": "héllo ✓"}\n\n');
    const chunks = new ReadableStream({
      start(controller) {
        for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
        controller.close();
      },
    });
    const events = [];
    for await (const event of readEvents(chunks)) events.push(event);
    assert.deepEqual(events, [{ event: "message", data: { content: "héllo ✓" }, id: null }]);
  });

  test("an event not ended by a blank line is not yielded (the stream was cut)", async () => {
    assert.deepEqual(await collect(['event: delta\ndata: {"content": "a"}\n']), []);
  });
});
