/**
 * Product catalog. Pages read products only through this module. The product
 * page loads its product from the API upstream with `useProduct()`. The lists,
 * the home page and the cart read the copy that ships in the bundle, through
 * `loadProducts()`.
 */
import products from './products.json';
import { useResource } from './resources.js';

/** Products per page of the product list. */
export const PAGE_SIZE = 12;

// TODO: the API serves single products only. When it also serves the list,
// loadProducts() can become a useResource() read like useProduct().
function loadProducts() {
  return products;
}

const productsBySlug = new Map(loadProducts().map((product) => [product.slug, product]));

/** Return every product, in catalog order. */
export function allProducts() {
  return loadProducts();
}

/**
 * Load the product with this slug from the API, suspending until it has
 * arrived. Returns `{product}`, with `product` null when the API has no such
 * product (404), or `{failure}` with a message when the API could not be
 * reached or responded with anything else.
 */
export function useProduct(slug) {
  const path = `/api/products/${encodeURIComponent(slug)}`;
  const entry = useResource(path);
  if (entry.status === 200 && isProduct(entry.body)) return { product: entry.body };
  if (entry.status === 404) return { product: null };
  if (entry.status === 200) {
    const failure = `GET ${path} returned a body without the product fields`;
    // Logged once per entry, however often the page renders it.
    if (!reportedEntries.has(entry)) console.error(failure);
    reportedEntries.add(entry);
    return { failure };
  }
  return { failure: entry.error ?? `GET ${path} returned status ${entry.status}` };
}

const reportedEntries = new WeakSet();

// The fields the pages read, with the types products.json gives them.
const PRODUCT_FIELDS = {
  slug: 'string',
  name: 'string',
  category: 'string',
  description: 'string',
  price: 'number',
  rating: 'number',
  stock: 'number',
  hue: 'number',
};

/** Tell whether an API response body has every field a product page reads. */
function isProduct(body) {
  if (body === null || typeof body !== 'object') return false;
  return Object.entries(PRODUCT_FIELDS).every(([name, type]) => typeof body[name] === type);
}

/** Return the bundled product with this slug, or null when there is none. */
export function findProduct(slug) {
  return productsBySlug.get(slug) ?? null;
}

/** Return the first `count` products, shown on the home page. */
export function featuredProducts(count) {
  return loadProducts().slice(0, count);
}

/** Return the number of pages in the product list. */
export function pageCount() {
  return Math.ceil(loadProducts().length / PAGE_SIZE);
}

/**
 * Return the products on list page `page` (1-based), or null when the page is
 * out of range.
 */
export function productPage(page) {
  if (!Number.isInteger(page) || page < 1 || page > pageCount()) return null;
  const start = (page - 1) * PAGE_SIZE;
  return loadProducts().slice(start, start + PAGE_SIZE);
}

/** Return the distinct categories, in catalog order. */
export function categories() {
  return [...new Set(loadProducts().map((product) => product.category))];
}

/**
 * Format a price in cents as US dollars, such as `$44.50`. It does not use
 * Intl.NumberFormat, so the output never depends on the runtime's locale data.
 */
export function formatPrice(cents) {
  const dollars = Math.floor(cents / 100);
  const rest = String(cents % 100).padStart(2, '0');
  return `$${dollars}.${rest}`;
}
