/**
 * Server entry: defines globalThis.renderPage(url) for enddel's render workers.
 *
 * It uses preact-render-to-string's async renderer directly, not preact-iso's
 * prerender(), because prerender() collects links through a module-level hook
 * that two overlapping renders would share.
 *
 * Lazy routes are loaded before each render, so no render suspends. A render
 * that suspends gets `<!--$s-->` markers around the lazy part and one that does
 * not has none, so without the preload the first render of a lazy route in each
 * worker would differ from every later one.
 */
import { renderToStringAsync } from 'preact-render-to-string';
import { App, LAZY_ROUTES } from './app.jsx';
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

function renderHead(meta) {
  let head = `<title>${escapeHtml(documentTitle(meta.title))}</title>`;
  if (meta.description) {
    head += `<meta name="description" content="${escapeHtml(meta.description)}">`;
  }
  return head;
}

/**
 * Render the page at `url` (path and query). Resolves to `{html, status, head}`:
 * the markup for the app's root element, the HTTP status (404 for the not-found
 * page) and the tags for <head>.
 */
async function renderPage(url) {
  if (typeof url !== 'string' || !url.startsWith('/')) {
    throw new TypeError(
      `renderPage: invalid url ${JSON.stringify(url)}; expected a path and query such as "/products?page=2"`,
    );
  }
  await Promise.all(LAZY_ROUTES.map((route) => route.preload()));

  const meta = { title: '', description: '', status: 200 };
  const html = await renderToStringAsync(
    <PageMetaContext.Provider value={meta}>
      <App url={url} />
    </PageMetaContext.Provider>,
  );
  return { html, status: meta.status, head: renderHead(meta) };
}

globalThis.renderPage = renderPage;
