/**
 * Render every route of dist/server/bundle.js in a node:vm context that has only
 * the standard globals the render workers provide (no require, no process, no
 * window, no document), and print each page's status and size.
 *
 * The context's fetch replaces the API upstream: it serves
 * /api/products/SLUG from src/data/products.json, as `python -m enddel.demo_api`
 * does. A second context, whose fetch fails like an unreachable upstream,
 * checks the product page's 503.
 *
 * Exits non-zero when a page has the wrong status or misses its expected text,
 * or when two renders of one URL differ.
 *
 * Usage: node scripts/check-render.mjs [BUNDLE]
 */
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import vm from 'node:vm';

const BUNDLE = process.argv[2] ?? 'dist/server/bundle.js';
const ORIGIN = 'http://127.0.0.1:8000';

// [url, expected status, text the markup must contain]
const PAGES = [
  ['/', 200, 'Everyday things, made to last'],
  ['/products', 200, 'Products, page 1 of 4'],
  ['/products?page=2', 200, 'Products, page 2 of 4'],
  ['/products?page=4', 200, 'Products, page 4 of 4'],
  ['/products?page=all', 200, 'All products'],
  ['/products/cast-iron-skillet', 200, 'Pre-seasoned 26 cm pan'],
  ['/about', 200, 'This page is a lazy route'],
  ['/cart', 200, 'Your cart is empty'],
  ['/heavy', 200, '500 products'],
  ['/products?page=5', 404, 'Page not found'],
  ['/products?page=two', 404, 'Page not found'],
  ['/products/no-such-product', 404, 'Page not found'],
  ['/no/such/page', 404, 'Page not found'],
];

const PRODUCTS = JSON.parse(await readFile('src/data/products.json', 'utf8'));
const PRODUCT_PATH = /^\/api\/products\/([^/]+)$/;

function jsonResponse(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json' },
  });
}

/** fetch for the API upstream's product routes; any other URL is a bug here. */
async function catalogFetch(input) {
  const url = new URL(String(input), ORIGIN);
  const match = url.origin === ORIGIN ? PRODUCT_PATH.exec(url.pathname) : null;
  if (!match) throw new TypeError(`render called fetch(${String(input)})`);
  const product = PRODUCTS.find((p) => p.slug === decodeURIComponent(match[1]));
  return product ? jsonResponse(200, product) : jsonResponse(404, { error: 'no such product' });
}

// fetch as it fails when the upstream is down. It runs inside the context, so
// it rejects with the context's own TypeError, as the render runtime does.
const UNREACHABLE_FETCH = `globalThis.fetch = async (input) => {
  throw new TypeError('fetch failed: connection refused for ' + String(input));
};`;

function createContext(fetch) {
  const location = new URL('/', ORIGIN);
  return vm.createContext({
    URL,
    URLSearchParams,
    TextEncoder,
    TextDecoder,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    queueMicrotask,
    fetch,
    Response,
    location: { origin: location.origin, href: location.href, pathname: '/', search: '' },
    console,
  });
}

async function renderTwice(context, url) {
  const first = await context.renderPage(url);
  const second = await context.renderPage(url);
  if (JSON.stringify(first) !== JSON.stringify(second)) {
    throw new Error(`${url}: two renders differ, so the markup is not deterministic`);
  }
  return first;
}

function checkPage(url, page, status, text) {
  const problems = [];
  if (page.status !== status) problems.push(`status ${page.status}, expected ${status}`);
  if (!page.html.includes(text)) problems.push(`markup lacks ${JSON.stringify(text)}`);
  if (!page.head.startsWith('<title>')) problems.push(`head lacks a <title>: ${page.head}`);
  return problems.map((problem) => `${url}: ${problem}`);
}

const bundle = await readFile(BUNDLE, 'utf8');
const context = createContext(catalogFetch);
vm.runInContext(bundle, context, { filename: BUNDLE });
if (typeof context.renderPage !== 'function') {
  throw new Error(`${BUNDLE} did not define globalThis.renderPage`);
}

const failures = [];
for (const [url, status, text] of PAGES) {
  const page = await renderTwice(context, url);
  failures.push(...checkPage(url, page, status, text));
  const bytes = Buffer.byteLength(page.html);
  console.log(`${String(page.status).padEnd(4)} ${String(bytes).padStart(7)} B  ${url}`);
}

const slugs = PRODUCTS.map((p) => p.slug);
for (const slug of slugs) {
  const page = await renderTwice(context, `/products/${slug}`);
  failures.push(...checkPage(`/products/${slug}`, page, 200, '<h1>'));
}
console.log(`200 for all ${slugs.length} product pages`);

// Overlapping renders must keep their own title and status.
const [about, missing] = await Promise.all(['/about', '/missing'].map((u) => context.renderPage(u)));
if (about.status !== 200 || missing.status !== 404 || !about.head.includes('About')) {
  failures.push(`overlapping renders mixed up: ${about.status} ${about.head}, ${missing.status}`);
}

// The product page hands the client the API response it rendered, and has 503
// when the upstream is down.
const detail = await context.renderPage('/products/brass-pen');
if (!detail.head.includes('<script type="application/json" id="shop-resources">')) {
  failures.push(`/products/brass-pen: head lacks the API data for hydration: ${detail.head}`);
}
const offline = createContext(undefined);
vm.runInContext(UNREACHABLE_FETCH, offline);
vm.runInContext(bundle, offline, { filename: BUNDLE });
const unavailable = await offline.renderPage('/products/brass-pen');
failures.push(...checkPage('/products/brass-pen, API down', unavailable, 503, 'Product unavailable'));

// A rough figure for the benchmark page, printed only: no limit is enforced here.
const runs = 20;
const start = performance.now();
for (let i = 0; i < runs; i += 1) await context.renderPage('/heavy');
console.log(`/heavy: ${((performance.now() - start) / runs).toFixed(1)} ms per render in node:vm`);

if (failures.length > 0) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log(`${PAGES.length + slugs.length} pages rendered as expected`);
