/**
 * Product catalog. Pages read products only through this module, and this module
 * reads them only through `loadProducts()`, so moving the data behind the API
 * upstream starts in that one function.
 */
import products from './products.json';

/** Products per page of the product list. */
export const PAGE_SIZE = 12;

// TODO: when products come from /api/products, loadProducts() becomes a fetch
// behind a suspending reader, and the client needs the server's data to hydrate.
function loadProducts() {
  return products;
}

const productsBySlug = new Map(loadProducts().map((product) => [product.slug, product]));

/** Return every product, in catalog order. */
export function allProducts() {
  return loadProducts();
}

/** Return the product with this slug, or null when there is none. */
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
