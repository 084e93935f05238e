// fetch (WHATWG Fetch) for server-side rendering. Headers, Request and
// Response come from whatwg-fetch; fetch itself hands each request to a
// Python host function that applies the fetch policy (same-origin /api/ goes
// to the API upstream, other hosts only when allowed) and the render deadline.
// Bodies cross the boundary as base64 inside one JSON string.
import { Headers, Request, Response } from "whatwg-fetch";

let host = null;
let generation = 0;

/** Install the Python host function: async (requestJson) => replyJson. */
export const setHost = (fn) => {
  host = fn;
};

/**
 * Start a new generation. Replies to fetches started in an earlier render are
 * dropped, so a late reply never runs code inside the next render.
 */
export const nextGeneration = () => {
  generation += 1;
};

const toBase64 = (bytes) => {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
};

const fromBase64 = (text) => Uint8Array.from(atob(text), (char) => char.charCodeAt(0));

const requestBody = (request) => {
  if (request._bodyArrayBuffer) return new Uint8Array(request._bodyArrayBuffer);
  if (request._bodyText) return new TextEncoder().encode(request._bodyText);
  return null;
};

const resolveUrl = (input) => {
  const base = globalThis.location ? globalThis.location.href : undefined;
  try {
    return new URL(input, base);
  } catch {
    throw new TypeError(
      `fetch: invalid URL ${JSON.stringify(input)}` +
        (base ? "" : " (relative URLs resolve against location, which exists only during a render)"),
    );
  }
};

// Statuses whose responses have no body in the Fetch Standard.
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

const makeResponse = (reply) => {
  const bytes = fromBase64(reply.body);
  const text = new TextDecoder().decode(bytes);
  const empty = NULL_BODY_STATUSES.has(reply.status);
  const response = new Response(empty ? null : text, {
    status: reply.status,
    statusText: reply.statusText,
    headers: reply.headers,
    url: reply.url,
  });
  // whatwg-fetch reads a string body back as text only, so the exact bytes
  // are kept for arrayBuffer() and bytes().
  const readBytes = () => {
    if (response.bodyUsed) return Promise.reject(new TypeError("Body has already been consumed."));
    response.bodyUsed = true;
    return Promise.resolve(bytes.slice());
  };
  response.bytes = readBytes;
  response.arrayBuffer = () => readBytes().then((copy) => copy.buffer);
  Object.defineProperty(response, "redirected", { value: reply.redirected, enumerable: true });
  return response;
};

export const fetch = (input, init) => {
  let request;
  let payload;
  try {
    request = new Request(input, init);
    if (request.signal && request.signal.aborted) return Promise.reject(request.signal.reason);
    const body = requestBody(request);
    payload = JSON.stringify({
      method: request.method,
      url: resolveUrl(request.url).href,
      headers: [...request.headers],
      body: body === null ? null : toBase64(body),
    });
  } catch (error) {
    return Promise.reject(error);
  }
  if (host === null) return Promise.reject(new TypeError("fetch is not available: the engine installed no host"));

  const started = generation;
  return new Promise((resolve, reject) => {
    const signal = request.signal;
    const onAbort = () => reject(signal.reason);
    if (signal) signal.addEventListener("abort", onAbort, { once: true });
    host(payload).then(
      (raw) => {
        if (started !== generation) return;
        if (signal) signal.removeEventListener("abort", onAbort);
        const reply = JSON.parse(raw);
        if (reply.error !== undefined) reject(new TypeError(reply.error));
        else resolve(makeResponse(reply));
      },
      (error) => {
        if (started !== generation) return;
        reject(new TypeError("fetch failed: " + String(error && error.message ? error.message : error)));
      },
    );
  });
};

export { Headers, Request, Response };
