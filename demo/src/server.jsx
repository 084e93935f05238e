/**
 * Server entry: defines globalThis.renderPage(url) for enddel's render workers.
 *
 * It uses preact-render-to-string's async renderer directly, not preact-iso's
 * prerender(), because prerender() collects links through a module-level hook
 * that two overlapping renders would share.
 *
 * Lazy routes are loaded before each render, so no render suspends on one. A
 * render that suspends gets `<!--$s-->` markers around the suspended part and
 * one that does not has none, so without the preload the first render of a lazy
 * route in each worker would differ from every later one. The product page
 * suspends on its API fetch in every render, so its markers are always there.
 */
import { renderToStringAsync } from 'preact-render-to-string';
import { App, LAZY_ROUTES } from './app.jsx';
import { RESOURCES_ELEMENT_ID, ResourceStore, serializeResources } from './data/resources.js';
import { PageMetaContext, documentTitle } from './meta.js';

// preact-iso's LocationProvider resolves the URL against location.origin even
// when it is given `url`. The render workers' runtime defines `location` during
// each render, and this stand-in only keeps the bundle usable without it.
if (typeof globalThis.location === 'undefined') {
  globalThis.location = { origin: 'http://localhost', pathname: '/', search: '' };
}

const HTML_ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (char) => HTML_ESCAPES[char]);
}

function renderHead(meta, resources) {
  let head = `<title>${escapeHtml(documentTitle(meta.title))}</title>`;
  if (meta.description) {
    head += `<meta name="description" content="${escapeHtml(meta.description)}">`;
  }
  if (resources.settled.size > 0) {
    // The API responses this render used, for the client to hydrate with.
    head +=
      `<script type="application/json" id="${RESOURCES_ELEMENT_ID}">` +
      `${serializeResources(resources)}</script>`;
  }
  return head;
}

/**
 * Render the page at `url` (path and query). Resolves to `{html, status, head}`:
 * the markup for the app's root element, the HTTP status (404 for the not-found
 * page, 503 when the API could not deliver a product) and the tags for <head>,
 * including the API responses the page was rendered from.
 */
async function renderPage(url) {
  if (typeof url !== 'string' || !url.startsWith('/')) {
    throw new TypeError(
      `renderPage: invalid url ${JSON.stringify(url)}; expected a path and query such as "/products?page=2"`,
    );
  }
  await Promise.all(LAZY_ROUTES.map((route) => route.preload()));

  const meta = { title: '', description: '', status: 200 };
  // One store per render: overlapping renders must not see each other's data.
  const resources = new ResourceStore();
  const html = await renderToStringAsync(
    <PageMetaContext.Provider value={meta}>
      <App url={url} resources={resources} />
    </PageMetaContext.Provider>,
  );
  return { html, status: meta.status, head: renderHead(meta, resources) };
}

globalThis.renderPage = renderPage;
