"""One V8 context with the server bundle loaded, and the calls that render with it.

The engine's calls are synchronous: a render worker process owns one engine and
renders one URL at a time. Only ``fetch`` leaves V8 during a render; mini-racer
runs it on its own event-loop thread, and the HTTP exchange in a worker thread
(see :mod:`workers.runtime.host`). The web-platform baseline, the prelude and
the bundle load in that order. Everything that crosses from JavaScript to
Python is packed by :data:`_RENDER_SHIM` into one string, because each call into
mini-racer costs more than rendering a small page (150 to 450 microseconds per
call, measured with mini-racer 0.14.1), and a string result is returned without
JSON encoding.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from py_mini_racer import (
    JSEvalException,
    JSFunction,
    JSOOMException,
    JSPromise,
    JSTimeoutException,
    MiniRacer,
)

from workers.runtime import BASELINE_PATH, read_baseline
from workers.runtime.host import FetchPolicy, encode_reply, perform_fetch

__all__ = [
    "DEFAULT_ORIGIN",
    "EXIT_WEDGED",
    "BundleLoadError",
    "ConsoleLines",
    "Engine",
    "RenderOutcome",
    "WedgedError",
]

#: Exit status of a render worker whose V8 context no longer runs scripts.
EXIT_WEDGED = 3

#: Public origin used for ``location`` when the caller names none; the
#: default of ``ENDDEL_PUBLIC_ORIGIN``.
DEFAULT_ORIGIN = "http://localhost:8000"

#: Bytes of os.urandom mixed into the ChaCha20 generator behind
#: crypto.getRandomValues: at load, and again at the start of every render.
#: 40 bytes fill its whole key and nonce state.
_ENTROPY_BYTES = 40

# V8's message for a read of an undeclared global.
_MISSING_GLOBAL = re.compile(r"ReferenceError: (\S+) is not defined")

#: Console lines as ``[level, text]`` pairs.
ConsoleLines = list[list[str]]

# Wraps renderPage so that every outcome, sync or async, value or exception,
# comes back as one string: JSON metadata, a NUL, then the HTML. JSON.stringify
# escapes NUL, so the first NUL in the string is always the separator. Each
# render has a token: a render that settles after it was abandoned (timed out)
# must not end the render that runs after it, so its result is dropped.
_RENDER_SHIM = r"""
(() => {
  const runtime = globalThis.__enddelRuntime;
  const describe = (error) => {
    if (error instanceof Error) {
      const stack = String(error.stack || "");
      const described = { name: error.name, message: error.message, stack };
      const missing = error instanceof ReferenceError &&
        /^(\S+) is not defined$/.exec(error.message);
      if (missing) {
        described.missing = missing[1];
        described.message += " (enddel's render runtime does not provide the global " +
          missing[1] + "; docs/runtime.md lists the globals it provides, " +
          "and ENDDEL_BUNDLE_PRELUDE can define more)";
      }
      return described;
    }
    const message = "renderPage threw a non-Error value: " + String(error);
    return { name: "Error", message, stack: "" };
  };
  // mini-racer cannot decode a lone surrogate, so replace them with U+FFFD as
  // Node does when it writes a string to a socket.
  const wellFormed = (text) => text.toWellFormed();
  const finish = (meta, html) => {
    const ended = runtime.end();
    meta.console = ended.console;
    if (ended.cancelledTimers > 0) meta.cancelledTimers = ended.cancelledTimers;
    return JSON.stringify(meta) + "\u0000" + html;
  };
  const packError = (error) => finish({ error: describe(error) }, "");
  const pack = (value) => {
    if (typeof value === "string") return finish({}, wellFormed(value));
    if (value === null || typeof value !== "object" || typeof value.html !== "string") {
      return packError(new TypeError(
        "renderPage must return a string or an object with an html string, got " +
        (value === null ? "null" : typeof value)));
    }
    const meta = {};
    if (value.status !== undefined) meta.status = value.status;
    if (value.headers !== undefined) meta.headers = value.headers;
    if (value.head !== undefined) meta.head = value.head;
    if (value.cache !== undefined) meta.cache = value.cache;
    if (value.ttl !== undefined) meta.ttl = value.ttl;
    return finish(meta, wellFormed(value.html));
  };
  let current = 0;
  let settled = null;
  let pending = null;
  globalThis.__enddelRender = (url, origin, entropy) => {
    const token = ++current;
    const guard = (settle) => (value) => (token === current ? settle(value) : "");
    let result;
    try {
      runtime.begin(new URL(url, origin).href, entropy);
      result = globalThis.renderPage(url);
    } catch (error) {
      return packError(error);
    }
    const thenable = result !== null && typeof result === "object" &&
      typeof result.then === "function";
    if (thenable) {
      // "" marks a render still running: a packed result always has a NUL.
      // The result is kept for __enddelTake, because returning the promise
      // to Python and waiting on it costs several times a plain eval.
      settled = null;
      pending = Promise.resolve(result).then(guard(pack), guard(packError));
      pending.then((packed) => { if (token === current) settled = packed; });
      return "";
    }
    return pack(result);
  };
  globalThis.__enddelTake = () => {
    const packed = settled;
    settled = null;
    return packed === null ? "" : packed;
  };
  globalThis.__enddelPending = () => pending;
  globalThis.__enddelAbandon = () => {
    current += 1;
    return JSON.stringify(runtime.end().console);
  };
})();
"""

#: Seconds a fetch may run past its render's deadline. A fetch cut off right
#: at the deadline would race the render's own timeout, and the render would
#: then fail with a fetch error (500) instead of timing out (504). With the
#: grace, the render's timeout always comes first and the late fetch's result
#: is dropped.
_FETCH_GRACE = 0.25

#: Calls of Engine.heap_used_bytes between two real heap measurements.
HEAP_SAMPLE_RENDERS = 16

#: How long a context gets to run a trivial script after a render timed out.
#: A context that cannot is still running the render's JavaScript (an endless
#: loop in a promise callback, which the eval timeout does not stop).
_LIVENESS_TIMEOUT = 0.5


class Watchdog:
    """Exit the process with EXIT_WEDGED when an armed deadline passes.

    mini-racer's eval timeout stops a synchronous endless loop, but not one in
    a promise callback: that eval never returns, and the thread that called it
    is lost. Only another thread can still act, and the only safe act is to
    end the process so that the pool starts a fresh worker.
    """

    def __init__(self) -> None:
        self._deadline: float | None = None
        self._changed = threading.Condition()
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def arm(self, seconds: float) -> None:
        with self._changed:
            self._deadline = time.monotonic() + seconds
            self._changed.notify()

    def disarm(self) -> None:
        with self._changed:
            self._deadline = None

    def _watch(self) -> None:
        with self._changed:
            while True:
                if self._deadline is None:
                    self._changed.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    os._exit(EXIT_WEDGED)
                self._changed.wait(remaining)


class BundleLoadError(Exception):
    """The baseline, prelude or bundle failed to evaluate, or renderPage is missing."""

    def __init__(self, message: str, console: Iterable[list[str]] = ()) -> None:
        super().__init__(message)
        #: The console lines the scripts wrote before the failure.
        self.console: ConsoleLines = list(console)


class WedgedError(Exception):
    """The context no longer runs scripts; the worker must be replaced."""


@dataclass(frozen=True, slots=True)
class RenderOutcome:
    """What one render produced: metadata from the shim, and the HTML.

    ``meta["console"]`` holds the render's console lines as ``[level, text]``
    pairs, level one of ``debug``, ``info``, ``warn`` and ``error``.
    """

    meta: dict[str, Any]
    html: str
    seconds: float


class Engine:
    """A V8 context holding the baseline, the prelude and the bundle.

    Close it before the process exits. ``origin`` is the public origin that
    ``location`` and relative fetch URLs resolve against; ``api_upstream`` and
    ``fetch_allowed_hosts`` are the fetch policy of :mod:`workers.runtime.host`.
    """

    def __init__(
        self,
        bundle_source: str,
        bundle_name: str,
        *,
        heap_bytes: int | None = None,
        prelude_source: str | None = None,
        prelude_name: str = "prelude",
        origin: str = DEFAULT_ORIGIN,
        api_upstream: str | None = None,
        fetch_allowed_hosts: Iterable[str] = (),
    ) -> None:
        self._context = MiniRacer()
        self._watchdog = Watchdog()
        self._heap_bytes: int | None = None
        self._heap_calls = 0
        self._origin = origin
        self._policy = FetchPolicy.create(origin, api_upstream, fetch_allowed_hosts)
        self._http = httpx.Client(follow_redirects=False, trust_env=False)
        self._deadline: float | None = None
        self._fetch_host: AbstractAsyncContextManager[Any] | None = None
        #: Console lines of the last render abandoned at its deadline.
        self.abandoned_console: ConsoleLines = []
        if heap_bytes is not None:
            self._context.set_hard_memory_limit(heap_bytes)

        self._evaluate(read_baseline(), str(BASELINE_PATH))
        self._context.eval(f"__enddelRuntime.addEntropy({_entropy()!r})")
        self._install_fetch_host()
        self._context.eval(_RENDER_SHIM)
        if prelude_source is not None:
            self._evaluate(prelude_source, prelude_name)
        self._evaluate(bundle_source, bundle_name)
        kind = self._context.eval("typeof globalThis.renderPage")
        if kind != "function":
            raise BundleLoadError(
                f"{bundle_name} does not define globalThis.renderPage "
                f"(typeof renderPage is {kind!r}). The bundle must assign "
                "globalThis.renderPage = (url) => ... at its top level.",
                self._take_console(),
            )
        #: Console lines written while the prelude and the bundle loaded.
        self.load_console: ConsoleLines = self._take_console()

    def _evaluate(self, source: str, name: str) -> None:
        try:
            self._context.eval(source)
        except JSEvalException as error:
            message = f"{name} failed to load: {error}"
            missing = _MISSING_GLOBAL.search(str(error))
            if missing is not None:
                message += (
                    f"\nenddel's render runtime does not provide the global "
                    f"{missing[1]}; docs/runtime.md lists the globals it provides, "
                    "and ENDDEL_BUNDLE_PRELUDE can define more."
                )
            raise BundleLoadError(message, self._take_console()) from None

    def _take_console(self) -> ConsoleLines:
        packed = self._context.eval("JSON.stringify(__enddelRuntime.end().console)")
        lines: ConsoleLines = json.loads(str(packed))
        return lines

    def _install_fetch_host(self) -> None:
        # NOTE: wrap_py_function is an async context manager bound to the asyncio
        # loop that mini-racer runs in its own thread (the private _ctx), so it is
        # entered and left on that loop. The wrapped function runs there too, and
        # moves the blocking HTTP exchange to a thread.
        loop = self._loop()
        host = self._context.wrap_py_function(self._fetch)

        async def enter() -> Any:
            return await host.__aenter__()

        function = asyncio.run_coroutine_threadsafe(enter(), loop).result()
        self._fetch_host = host
        install = self._context.eval("(host) => __enddelRuntime.setFetchHost(host)")
        if not isinstance(install, JSFunction):
            raise TypeError(f"expected a JSFunction, got {type(install).__name__}")
        install(function)

    def _loop(self) -> asyncio.AbstractEventLoop:
        context = self._context._ctx
        if context is None:
            raise RuntimeError("the V8 context is closed")
        loop: asyncio.AbstractEventLoop = context.event_loop
        return loop

    async def _fetch(self, *args: Any) -> str:
        deadline = self._deadline
        if deadline is None:
            return encode_reply({"error": "fetch is available only during a render"})
        request = json.loads(str(args[0]))
        reply = await asyncio.to_thread(
            perform_fetch, self._http, self._policy, request, deadline + _FETCH_GRACE
        )
        return encode_reply(reply)

    def run_script(self, source: str, name: str) -> None:
        """Evaluate a script in the context, raising BundleLoadError if it throws."""
        self._evaluate(source, name)

    def render(self, url: str, timeout: float) -> RenderOutcome:
        """Render one URL, waiting at most ``timeout`` seconds for it to settle.

        Timers and microtasks run, and fetches complete, until renderPage's
        promise settles; timers still pending then are cancelled. Raises
        JSTimeoutException when the render does not settle in time (its console
        lines are then in :attr:`abandoned_console`), WedgedError when the
        context stops running scripts after that, and JSOOMException when the render
        exhausted the heap.
        """
        started = time.perf_counter()
        call = (
            f"__enddelRender({json.dumps(url)}, {json.dumps(self._origin)}, "
            f"{json.dumps(_entropy())})"
        )
        self._deadline = time.monotonic() + timeout
        self._watchdog.arm(timeout + _LIVENESS_TIMEOUT * 2)
        try:
            packed: object = self._context.eval(call, timeout_sec=timeout)
            if packed == "":
                packed = self._settle(timeout - (time.perf_counter() - started))
        except JSTimeoutException:
            self._abandon()
            raise
        finally:
            self._deadline = None
            self._watchdog.disarm()
        if not isinstance(packed, str):
            raise TypeError(f"render shim returned {type(packed).__name__}, not str")

        separator = packed.index("\0")
        meta = json.loads(packed[:separator])
        html = packed[separator + 1 :]
        return RenderOutcome(meta, html, time.perf_counter() - started)

    def _settle(self, remaining: float) -> object:
        """Return the packed result of a render whose renderPage returned a promise.

        V8 runs the microtasks queued by an eval before the eval returns, so a
        promise that needed no timer or fetch has settled already and one more
        eval collects it (about 0.1 ms here, against 0.8 ms for waiting on the
        promise through mini-racer, measured with mini-racer 0.14.1). Only a
        render still waiting for a timer or a fetch waits on the promise.
        """
        packed = self._context.eval("__enddelTake()", timeout_sec=max(remaining, 0.001))
        if packed != "":
            return packed
        promise = self._context.eval("__enddelPending()")
        assert isinstance(promise, JSPromise)
        return promise.get(timeout=max(remaining, 0.001))

    def _abandon(self) -> None:
        """Cancel a timed-out render's timers and keep its console lines."""
        try:
            packed = self._context.eval(
                "__enddelAbandon()", timeout_sec=_LIVENESS_TIMEOUT
            )
        except JSTimeoutException:
            raise WedgedError(
                "the V8 context stopped running scripts after a timeout"
            ) from None
        self.abandoned_console = json.loads(str(packed))

    def heap_used_bytes(self) -> int:
        """Return the V8 heap in use, in bytes, sampled every HEAP_SAMPLE_RENDERS calls.

        One heap_stats() call costs about 0.28 ms with mini-racer 0.14.1, as
        much as rendering a small page, so the figure may be that many calls old.
        """
        self._heap_calls += 1
        if self._heap_bytes is None or self._heap_calls >= HEAP_SAMPLE_RENDERS:
            stats = self._context.heap_stats()
            self._heap_bytes = int(stats.get("used_heap_size", 0))
            self._heap_calls = 0
        return self._heap_bytes

    def close(self) -> None:
        """Dispose of the V8 context; mini-racer can hang interpreter exit otherwise."""
        if self._fetch_host is not None:
            host = self._fetch_host
            self._fetch_host = None

            async def leave() -> None:
                await host.__aexit__(None, None, None)

            asyncio.run_coroutine_threadsafe(leave(), self._loop()).result()
        self._http.close()
        self._context.close()


def _entropy() -> str:
    """Return fresh operating-system randomness for crypto.getRandomValues, as hex."""
    return os.urandom(_ENTROPY_BYTES).hex()


__all__ += ["JSOOMException", "JSTimeoutException"]
