// Checks of the web-platform baseline on the cases SSR code hits. The same
// script runs in Node and in a render worker; both must produce the same
// JSON. globalThis.runChecks() returns a promise of the results.
globalThis.runChecks = async () => {
  const results = {};
  const check = async (name, body) => {
    try {
      results[name] = await body();
    } catch (error) {
      // Only the error's name is compared: messages differ between implementations.
      results[name] = { threw: error.name };
    }
  };

  await check("url relative resolution", () => [
    new URL("../c/d?x=1#h", "https://shop.example/a/b/").href,
    new URL("/root", "https://shop.example/a/b").href,
    new URL("?only=query", "https://shop.example/a/b").href,
    new URL("//other.example/p", "https://shop.example/").href,
    new URL("https://shop.example:443/x").port,
    new URL("http://EXAMPLE.com/%7Efoo/./bar/../baz").href,
  ]);
  await check("url invalid", () => new URL("not a url"));
  await check("url fields", () => {
    const url = new URL("https://user:pw@shop.example:8443/p/a t?q=1&r=é#frag");
    return [url.protocol, url.username, url.host, url.hostname, url.port, url.pathname, url.search, url.hash, url.origin];
  });
  await check("url idna", () => new URL("https://bücher.example/").host);
  await check("search params encoding", () => {
    const params = new URLSearchParams("a=1&b=x%20y&c=a+b&d=%E2%82%AC");
    params.append("e", "ä &=+/");
    params.set("a", "2");
    params.sort();
    return [params.toString(), params.get("b"), params.get("c"), params.getAll("a"), [...params.keys()]];
  });
  await check("search params from url", () => {
    const url = new URL("https://shop.example/s?q=shoes&page=2");
    url.searchParams.set("page", "3");
    url.searchParams.append("tag", "a b");
    return url.href;
  });
  await check("utf8 round trip", () => {
    const text = "héllo wörld € 𝄞 日本語";
    const bytes = new TextEncoder().encode(text);
    return [Array.from(bytes).length, new TextDecoder().decode(bytes) === text];
  });
  await check("utf8 invalid bytes", () =>
    new TextDecoder().decode(new Uint8Array([0x61, 0xff, 0xc3, 0x28, 0xe2, 0x82, 0x62, 0xf0, 0x9f, 0x98])),
  );
  await check("utf8 fatal", () => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xc3])));
  await check("utf8 bom and stream", () => {
    const decoder = new TextDecoder();
    const euro = [0xe2, 0x82, 0xac];
    return [
      new TextDecoder().decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x41])),
      decoder.decode(new Uint8Array(euro.slice(0, 2)), { stream: true }) + decoder.decode(new Uint8Array(euro.slice(2))),
    ];
  });
  await check("encode into", () => {
    const target = new Uint8Array(4);
    return [new TextEncoder().encodeInto("a€b", target), Array.from(target)];
  });
  await check("lone surrogate encoding", () => Array.from(new TextEncoder().encode("a\ud800b")));
  await check("base64", () => [btoa("hello"), atob("aGVsbG8="), atob(" aGVs bG8 ")]);
  await check("btoa non latin1", () => btoa("€"));
  await check("structured clone", () => {
    const source = { date: new Date(0), map: new Map([[1, { a: [1, 2] }]]), set: new Set(["x"]), bytes: new Uint8Array([1, 2]) };
    source.self = source;
    const copy = structuredClone(source);
    return [copy !== source, copy.self === copy, copy.date.getTime(), copy.map.get(1).a, [...copy.set], Array.from(copy.bytes)];
  });
  await check("structured clone function", () => structuredClone({ f() {} }));
  await check("timer ordering", async () => {
    const order = [];
    await new Promise((resolve) => {
      setTimeout(() => order.push("t10"), 10);
      setTimeout(() => {
        order.push("t0");
        Promise.resolve().then(() => order.push("micro after t0"));
      }, 0);
      setTimeout(() => order.push("t-missing"));
      setTimeout(() => order.push("t-negative"), -5);
      setTimeout(() => order.push("t-nan"), "soon");
      const cancelled = setTimeout(() => order.push("cancelled"), 1);
      clearTimeout(cancelled);
      queueMicrotask(() => order.push("microtask"));
      Promise.resolve().then(() => order.push("promise"));
      let ticks = 0;
      const interval = setInterval(() => {
        ticks += 1;
        if (ticks === 3) {
          clearInterval(interval);
          order.push("interval x3");
          // Resolving here, not from a timer of its own, keeps the order the
          // same when a loaded machine runs every timer late.
          resolve();
        }
      }, 20);
      order.push("sync");
    });
    return order;
  });
  await check("timer arguments and handle", async () => {
    const value = await new Promise((resolve) => setTimeout((a, b) => resolve(a + b), 1, "x", "y"));
    const handle = setTimeout(() => {}, 1);
    clearTimeout(handle);
    return [value, typeof handle.unref, typeof handle.hasRef, handle.hasRef()];
  });
  await check("timer bad callback", () => setTimeout("code", 1));
  await check("abort", async () => {
    const controller = new AbortController();
    const events = [];
    controller.signal.addEventListener("abort", (event) => events.push(event.type));
    controller.signal.onabort = () => events.push("onabort");
    const before = controller.signal.aborted;
    controller.abort();
    controller.abort("again");
    const reason = controller.signal.reason;
    let thrown;
    try {
      controller.signal.throwIfAborted();
    } catch (error) {
      thrown = error.name;
    }
    const custom = new AbortController();
    custom.abort(new Error("stop"));
    const timeout = AbortSignal.timeout(5);
    await new Promise((resolve) => timeout.addEventListener("abort", resolve));
    const any = AbortSignal.any([new AbortController().signal, AbortSignal.abort("first")]);
    return [before, events, reason.name, reason.message, reason instanceof DOMException, thrown,
      custom.signal.reason.message, timeout.reason.name, any.aborted, any.reason, AbortSignal.abort().reason.name];
  });
  await check("abort signal constructor", () => new AbortSignal());
  await check("event target", () => {
    const target = new EventTarget();
    const seen = [];
    const listener = (event) => seen.push([event.type, event.target === target]);
    target.addEventListener("ping", listener);
    target.addEventListener("ping", listener);
    target.addEventListener("ping", () => seen.push("once"), { once: true });
    target.dispatchEvent(new Event("ping"));
    target.dispatchEvent(new Event("ping"));
    target.removeEventListener("ping", listener);
    target.dispatchEvent(new Event("ping"));
    return seen;
  });
  await check("headers", () => {
    const headers = new Headers({ "Content-Type": "text/html", "X-A": "1" });
    headers.append("x-a", "2");
    headers.set("Accept", "application/json");
    return [headers.get("x-a"), headers.has("content-type"), [...headers].sort()];
  });
  await check("response body", async () => {
    const response = new Response('{"a":1}', { status: 201, headers: { "content-type": "application/json" } });
    return [response.status, response.ok, response.headers.get("content-type"), await response.json()];
  });
  await check("response status range", () => new Response("", { status: 600 }));
  await check("request", () => {
    const request = new Request("https://shop.example/api/x", { method: "post", body: "a=1", headers: { "X-Y": "z" } });
    return [request.method, request.url, request.headers.get("x-y")];
  });
  await check("random values", () => {
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    const uuid = crypto.randomUUID();
    return [bytes.length, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid), crypto.randomUUID() !== uuid];
  });
  await check("random values float", () => crypto.getRandomValues(new Float64Array(2)));
  await check("random values too many", () => crypto.getRandomValues(new Uint8Array(65537)));
  await check("performance now", () => {
    const first = performance.now();
    return [typeof first, first >= 0, performance.now() >= first, typeof performance.timeOrigin];
  });
  await check("dom exception", () => {
    const error = new DOMException("boom", "AbortError");
    return [error.name, error.message, error.code, error instanceof Error];
  });
  return results;
};
