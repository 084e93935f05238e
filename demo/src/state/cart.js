/**
 * Shopping cart, held in signals. The server never changes it, so every server
 * render shows an empty cart. The browser restores the saved cart after
 * hydration.
 */
import { computed, effect, signal } from '@preact/signals';
import { findProduct } from '../data/catalog.js';

const STORAGE_KEY = 'enddel-demo-cart';

/** Quantity per product slug. */
export const cartLines = signal({});

/** Number of items in the cart, shown in the header. */
export const cartCount = computed(() =>
  Object.values(cartLines.value).reduce((sum, quantity) => sum + quantity, 0),
);

/** Sum of the cart's prices in cents. */
export const cartTotal = computed(() =>
  Object.entries(cartLines.value).reduce((sum, [slug, quantity]) => {
    const product = findProduct(slug);
    return product ? sum + product.price * quantity : sum;
  }, 0),
);

/** Add one of the product to the cart. */
export function addToCart(slug) {
  const lines = cartLines.value;
  cartLines.value = { ...lines, [slug]: (lines[slug] ?? 0) + 1 };
}

/** Remove every unit of the product from the cart. */
export function removeFromCart(slug) {
  const { [slug]: _removed, ...rest } = cartLines.value;
  cartLines.value = rest;
}

/**
 * Load the saved cart from `storage` and save every later change to it. Call it
 * after hydration, so the first client render matches the server's empty cart.
 */
export function persistCart(storage) {
  try {
    const saved = JSON.parse(storage.getItem(STORAGE_KEY) ?? '{}');
    cartLines.value = keepKnownProducts(saved);
  } catch (error) {
    // A corrupt entry (hand-edited, or from an older shape) only loses the cart.
    if (!(error instanceof SyntaxError)) throw error;
  }
  effect(() => storage.setItem(STORAGE_KEY, JSON.stringify(cartLines.value)));
}

function keepKnownProducts(saved) {
  const lines = {};
  for (const [slug, quantity] of Object.entries(saved ?? {})) {
    if (findProduct(slug) && Number.isInteger(quantity) && quantity > 0) {
      lines[slug] = quantity;
    }
  }
  return lines;
}
