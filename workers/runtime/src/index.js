// The web-platform baseline of a render worker: the server-side part of the
// WinterTC Minimum Common Web API, installed on globalThis before the user's
// prelude and bundle. The engine drives it through globalThis.__enddelRuntime.
import "core-js/actual/dom-exception";
import "core-js/actual/url";
import "core-js/actual/url-search-params";
import "core-js/actual/structured-clone";
import "core-js/actual/atob";
import "core-js/actual/btoa";
import { TextDecoder, TextEncoder } from "./encoding.js";
import { Event, EventTarget } from "event-target-shim";

import { AbortController, AbortSignal } from "./abort.js";
import { console, takeLines } from "./console.js";
import { addEntropy, crypto } from "./crypto.js";
import { Headers, Request, Response, fetch, nextGeneration, setHost } from "./fetch.js";
import * as timers from "./timers.js";

const timeOrigin = Date.now();
const performance = {
  timeOrigin,
  now: () => Date.now() - timeOrigin,
  toJSON: () => ({ timeOrigin }),
};

const globals = {
  console,
  TextEncoder,
  TextDecoder,
  setTimeout: timers.setTimeout,
  clearTimeout: timers.clearTimeout,
  setInterval: timers.setInterval,
  clearInterval: timers.clearInterval,
  queueMicrotask: timers.queueMicrotask,
  performance,
  crypto,
  Event,
  EventTarget,
  AbortController,
  AbortSignal,
  Headers,
  Request,
  Response,
  fetch,
};

for (const [name, value] of Object.entries(globals)) {
  const existing = Object.getOwnPropertyDescriptor(globalThis, name);
  if (existing && !existing.configurable) {
    // mini-racer declares its own setTimeout and clearTimeout with var, which
    // makes them non-configurable but still writable.
    globalThis[name] = value;
  } else {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }
}

const setLocation = (href) => {
  Object.defineProperty(globalThis, "location", {
    value: href === null ? undefined : new URL(href),
    writable: true,
    configurable: true,
    enumerable: false,
  });
};

const runtime = {
  /** Start a render: fresh entropy, a location, and a new fetch generation. */
  begin(href, entropyHex) {
    addEntropy(entropyHex);
    nextGeneration();
    setLocation(href);
  },
  /** End a render (or the load): cancel its timers and take its console lines. */
  end() {
    const cancelled = timers.cancelAll();
    nextGeneration();
    setLocation(null);
    return { console: takeLines(), cancelledTimers: cancelled };
  },
  setFetchHost: setHost,
  addEntropy,
};

Object.defineProperty(globalThis, "__enddelRuntime", { value: Object.freeze(runtime), enumerable: false });
