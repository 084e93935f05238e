// AbortController and AbortSignal (DOM Standard) on event-target-shim's
// EventTarget: abort reasons, throwIfAborted, AbortSignal.abort, .timeout and
// .any, and the onabort event handler attribute.
import { Event, EventTarget } from "event-target-shim";
import { setTimeout } from "./timers.js";

const CONSTRUCTING = Symbol("constructing");

export class AbortSignal extends EventTarget {
  #aborted = false;
  #reason = undefined;
  #onabort = null;

  constructor(key) {
    if (key !== CONSTRUCTING) throw new TypeError("Illegal constructor");
    super();
  }
  get aborted() {
    return this.#aborted;
  }
  get reason() {
    return this.#reason;
  }
  get onabort() {
    return this.#onabort;
  }
  set onabort(handler) {
    if (this.#onabort) this.removeEventListener("abort", this.#onabort);
    this.#onabort = typeof handler === "function" ? handler : null;
    if (this.#onabort) this.addEventListener("abort", this.#onabort);
  }
  throwIfAborted() {
    if (this.#aborted) throw this.#reason;
  }
  get [Symbol.toStringTag]() {
    return "AbortSignal";
  }

  static abort(reason) {
    const signal = new AbortSignal(CONSTRUCTING);
    signal._abort(reason);
    return signal;
  }
  static timeout(ms) {
    const signal = new AbortSignal(CONSTRUCTING);
    setTimeout(() => signal._abort(new DOMException("The operation was aborted due to timeout", "TimeoutError")), ms);
    return signal;
  }
  static any(signals) {
    const combined = new AbortSignal(CONSTRUCTING);
    for (const signal of signals) {
      if (signal.aborted) {
        combined._abort(signal.reason);
        return combined;
      }
    }
    for (const signal of signals) {
      signal.addEventListener("abort", () => combined._abort(signal.reason), { once: true });
    }
    return combined;
  }

  /** Signal abort: set the reason once and dispatch one "abort" event. */
  _abort(reason) {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
    this.dispatchEvent(new Event("abort"));
  }
}

export class AbortController {
  #signal = new AbortSignal(CONSTRUCTING);
  get signal() {
    return this.#signal;
  }
  abort(reason) {
    this.#signal._abort(reason);
  }
  get [Symbol.toStringTag]() {
    return "AbortController";
  }
}
