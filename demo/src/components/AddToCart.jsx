import { addToCart, cartLines } from '../state/cart.js';

/** Add-to-cart button that shows how many of the product the cart has. */
export function AddToCart({ product }) {
  if (product.stock === 0) {
    return <button class="button" type="button" disabled>Sold out</button>;
  }
  const inCart = cartLines.value[product.slug] ?? 0;
  return (
    <button class="button button--primary" type="button" onClick={() => addToCart(product.slug)}>
      {inCart ? `Add another (${inCart} in cart)` : 'Add to cart'}
    </button>
  );
}
