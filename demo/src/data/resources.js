/**
 * JSON resources fetched from the shop's API, read by components that suspend
 * until the data has arrived.
 *
 * A ResourceStore keeps one entry per API path. `read(path)` returns the entry
 * when it has settled, and otherwise starts the fetch and throws a promise.
 * That is the suspension protocol both renderers follow: the server's
 * renderToStringAsync awaits the promise and renders the component again, and
 * in the browser preact-iso's Router keeps showing the previous page until the
 * promise settles and the component renders again. A failed fetch does not
 * reject the thrown promise: it is stored as an entry and rendered like any
 * other response.
 *
 * The server creates a store per render, since one V8 context may run several
 * renders at once, and writes its settled entries into the page (see
 * `serializeResources`). The browser seeds its store from them, so hydration
 * reads the same responses without fetching, and later client-side navigation
 * fetches the same paths through enddel's /api proxy.
 */
import { createContext } from 'preact';
import { useContext, useEffect, useReducer } from 'preact/hooks';

/** The id of the <script type="application/json"> element holding the entries. */
export const RESOURCES_ELEMENT_ID = 'shop-resources';

/**
 * Fetch `path` and return its settled entry: `{status, body}` for an HTTP
 * response, with `body` null when the response is not JSON (a proxy's error
 * page, say), or `{error}` with a message when no response arrived. Failures
 * are logged with console.error, which enddel writes to its render log with
 * the page's URL.
 */
async function fetchEntry(path) {
  let status;
  let text;
  try {
    const response = await fetch(path, { headers: { accept: 'application/json' } });
    status = response.status;
    text = await response.text();
  } catch (error) {
    // fetch rejects with a TypeError when the network fails, in browsers and in
    // enddel's render runtime alike. Anything else is a bug and propagates.
    if (!(error instanceof TypeError)) throw error;
    const message = `GET ${path} failed: ${error.message}`;
    console.error(message);
    return { error: message };
  }
  if (status >= 500) console.error(`GET ${path} returned status ${status}`);
  return { status, body: parseJson(text) };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    return null;
  }
}

/** Tell whether an entry records a failure worth retrying: no response, or a 5xx. */
function isFailure(entry) {
  return entry.error !== undefined || entry.status >= 500;
}

export class ResourceStore {
  /** `entries` maps API paths to settled entries, as serializeResources wrote them. */
  constructor(entries = {}) {
    this.settled = new Map(Object.entries(entries));
    this.pending = new Map();
  }

  /** Return the settled entry for `path`, or start its fetch and throw a promise. */
  read(path) {
    const entry = this.settled.get(path);
    if (entry) return entry;
    let pending = this.pending.get(path);
    if (!pending) {
      pending = fetchEntry(path).then((settled) => {
        this.settled.set(path, settled);
        this.pending.delete(path);
      });
      this.pending.set(path, pending);
    }
    throw pending;
  }

  /** Drop the entry for `path` if it is a failure, so the next read fetches again. */
  forgetFailure(path) {
    const entry = this.settled.get(path);
    if (entry && isFailure(entry)) {
      this.settled.delete(path);
    }
  }

  /** Return every settled entry, keyed by path. */
  toJSON() {
    return Object.fromEntries(this.settled);
  }
}

/** The store of the current render (server) or page (browser). */
export const ResourceContext = createContext(null);

/**
 * Read the resource at the API path `path` (such as `/api/products/brass-pen`),
 * suspending until it has settled. A failure is kept only while the component
 * that showed it stays mounted, so coming back to the page retries.
 */
export function useResource(path) {
  const store = useContext(ResourceContext);
  if (!store) throw new Error('useResource needs a ResourceContext.Provider above it');
  const [, rerender] = useReducer((count) => count + 1, 0);
  useEffect(() => () => store.forgetFailure(path), [store, path]);
  try {
    return store.read(path);
  } catch (thrown) {
    // preact-iso's Router re-renders itself when the promise settles, but not
    // the suspended route, so the component schedules its own render, as
    // preact-iso's lazy() does. The server's renderer retries by itself.
    if (typeof thrown?.then === 'function') thrown.then(rerender);
    throw thrown;
  }
}

/**
 * Return the store's entries as the text of a <script type="application/json">
 * element. `<` is escaped so that no value can close the element early.
 */
export function serializeResources(store) {
  return JSON.stringify(store).replace(/</g, '\\u003c');
}

/** Create the browser's store from the entries the server wrote into the page. */
export function resourcesFromDocument(document) {
  const element = document.getElementById(RESOURCES_ELEMENT_ID);
  return new ResourceStore(element ? JSON.parse(element.textContent) : {});
}
