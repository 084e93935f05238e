// Timers with Node's semantics: a delay that is missing, not a number, below 1
// or above 2**31 - 1 becomes 1 ms; timers fire in order of due time, then of
// creation; each callback runs in its own task, so microtasks queued by one
// callback run before the next timer fires.
//
// V8 alone has no task queue a script can post to. Atomics.waitAsync is the
// one standard API whose promise is resolved from a separate task, so one
// waiter on a private cell is the scheduler's clock: it waits until the
// earliest due time, or is woken early with Atomics.notify when a sooner timer
// is added. Only one waiter exists at a time, because V8 resolves all woken
// waiters in a single task.
import { reportUncaught } from "./console.js";

// Largest delay Node accepts, in ms (a signed 32-bit int), from Node's timers.
const TIMEOUT_MAX = 2 ** 31 - 1;

const cell = new Int32Array(new SharedArrayBuffer(4));
const pending = new Map();
let lastId = 0;
let lastSequence = 0;
let waitingUntil = null;

const normalizeDelay = (delay) => {
  const ms = Number(delay);
  return ms >= 1 && ms <= TIMEOUT_MAX ? ms : 1;
};

/** The handle setTimeout returns, shaped like Node's Timeout object. */
export class Timeout {
  #id;
  #refed = true;
  constructor(id) {
    this.#id = id;
  }
  ref() {
    this.#refed = true;
    return this;
  }
  unref() {
    this.#refed = false;
    return this;
  }
  hasRef() {
    return this.#refed;
  }
  refresh() {
    const timer = pending.get(this.#id);
    if (timer) {
      timer.due = Date.now() + timer.delay;
      timer.sequence = ++lastSequence;
      arm();
    }
    return this;
  }
  close() {
    pending.delete(this.#id);
    return this;
  }
  [Symbol.toPrimitive]() {
    return this.#id;
  }
}

const earliest = () => {
  let first = null;
  for (const timer of pending.values()) {
    if (first === null || timer.due < first.due || (timer.due === first.due && timer.sequence < first.sequence)) {
      first = timer;
    }
  }
  return first;
};

const arm = () => {
  const next = earliest();
  if (next === null) return;
  if (waitingUntil !== null) {
    // The waiter's wake-up handler re-arms for whichever timer is first then.
    if (next.due < waitingUntil) Atomics.notify(cell, 0);
    return;
  }
  const ms = next.due - Date.now();
  waitingUntil = next.due;
  const waiter = ms >= 1 ? Atomics.waitAsync(cell, 0, 0, ms) : Atomics.waitAsync(cell, 0, 0);
  waiter.value.then(wake);
  if (ms < 1) Atomics.notify(cell, 0);
};

const wake = () => {
  waitingUntil = null;
  const next = earliest();
  if (next !== null && next.due <= Date.now()) fire(next);
  arm();
};

const fire = (timer) => {
  if (timer.repeat) {
    timer.due = Date.now() + timer.delay;
    timer.sequence = ++lastSequence;
  } else {
    pending.delete(timer.id);
  }
  try {
    timer.callback(...timer.args);
  } catch (error) {
    reportUncaught(error);
  }
};

const schedule = (callback, delay, args, repeat) => {
  if (typeof callback !== "function") {
    throw new TypeError(`The "callback" argument must be of type function. Received ${typeof callback}`);
  }
  const id = ++lastId;
  const ms = normalizeDelay(delay);
  pending.set(id, { id, callback, args, repeat, delay: ms, due: Date.now() + ms, sequence: ++lastSequence });
  arm();
  return new Timeout(id);
};

const cancel = (handle) => {
  if (handle === undefined || handle === null) return;
  pending.delete(Number(handle));
};

export const setTimeout = (callback, delay, ...args) => schedule(callback, delay, args, false);
export const setInterval = (callback, delay, ...args) => schedule(callback, delay, args, true);
export const clearTimeout = cancel;
export const clearInterval = cancel;

export const queueMicrotask = (callback) => {
  if (typeof callback !== "function") {
    throw new TypeError(`The "callback" argument must be of type function. Received ${typeof callback}`);
  }
  Promise.resolve().then(() => {
    try {
      callback();
    } catch (error) {
      reportUncaught(error);
    }
  });
};

/** Cancel every pending timer; returns how many there were. */
export const cancelAll = () => {
  const count = pending.size;
  pending.clear();
  return count;
};
