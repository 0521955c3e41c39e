// The documented HTTP API, as a browser calls it: bearer token, one error shape, SSE by
// fetch + ReadableStream (EventSource cannot send Authorization).

import { automaticRetrySeconds, parseRetryAfter } from "./retry.js";
import { readEvents } from "./sse.js";

/** An error answer ({"error": {"code", "message"}}), or the network failing (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, { retryAfter = null, details = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After
    this.details = details;
  }
}

function retryAfterSeconds(response) {
  return parseRetryAfter(response.headers.get("Retry-After"));
}

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = `The server answered ${response.status} ${response.statusText}.`;
  let details = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      details = body.error.details ?? null;
    }
  } catch {
    // not our JSON shape (a proxy's page): keep the generic message
  }
  return new ApiError(response.status, code, message, { retryAfter: retryAfterSeconds(response), details });
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });

/** A random UUID, also where crypto.randomUUID is missing (plain http on another host). */
export function newKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class Api {
  /**
   * @param {object} options
   * @param {() => Promise<string|null>} options.token the current access token
   * @param {(err: ApiError) => void} options.onUnauthorized a 401: the session is over
   * @param {(err: ApiError, seconds: number, attempt: number) => void} options.onRetry told before each automatic retry
   * @param {() => void} options.onRecovered told when a call succeeded after automatic retries
   * @param {string} [options.base] where the API is ("" = this origin)
   */
  constructor({ token, onUnauthorized, onRetry, onRecovered, base = "" }) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
    this.onRetry = onRetry;
    this.onRecovered = onRecovered;
    this.base = base;
  }

  /**
   * The Response of one call, retried by itself on 503 with backoff; throws ApiError. The
   * body is `json` (sent as JSON), or `body` (a Blob or File, sent as it is, as
   * `contentType`: an archive, a character card).
   */
  async fetch(method, path, { json, body, contentType, headers = {}, signal, accept = "application/json" } = {}) {
    for (let attempt = 1; ; attempt++) {
      const token = await this.token();
      const sent = { Accept: accept, ...headers };
      if (token) sent.Authorization = `Bearer ${token}`;
      if (json !== undefined) sent["Content-Type"] = "application/json";
      else if (body !== undefined && contentType) sent["Content-Type"] = contentType;
      let response;
      try {
        response = await fetch(this.base + path, {
          method,
          headers: sent,
          body: json === undefined ? body : JSON.stringify(json),
          signal,
          cache: "no-store",
        });
      } catch (err) {
        if (signal?.aborted) throw err;
        throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection and try again.");
      }
      if (response.ok) {
        if (attempt > 1) this.onRecovered?.();
        return response;
      }
      const err = await errorOf(response);
      if (err.status === 401) {
        this.onUnauthorized?.(err);
        throw err;
      }
      const seconds = automaticRetrySeconds(err, attempt); // 1, 2, 4, 8 s, or Retry-After
      if (seconds !== null) {
        this.onRetry?.(err, seconds, attempt);
        await sleep(seconds * 1000, signal);
        continue;
      }
      throw err;
    }
  }

  async json(method, path, options = {}) {
    const response = await this.fetch(method, path, options);
    if (response.status === 204) return { body: null, response };
    return { body: await response.json(), response };
  }

  get(path, options) {
    return this.json("GET", path, options);
  }

  post(path, json, options = {}) {
    return this.json("POST", path, { ...options, json });
  }

  patch(path, json, options = {}) {
    return this.json("PATCH", path, { ...options, json });
  }

  /** POSTs a file's bytes as they are (`contentType`: the file's media type); its JSON answer. */
  upload(path, file, contentType, options = {}) {
    return this.json("POST", path, { ...options, body: file, contentType });
  }

  /** An SSE answer: yields {event, data (parsed JSON), id} as they arrive. */
  async *events(method, path, { json, headers, signal } = {}) {
    const response = await this.fetch(method, path, { json, headers, signal, accept: "text/event-stream" });
    yield* readEvents(response.body);
  }
}
