import { findProduct, formatPrice } from '../data/catalog.js';
import { usePageMeta } from '../meta.js';
import { cartLines, cartTotal, removeFromCart } from '../state/cart.js';

function CartLine({ product, quantity }) {
  return (
    <tr>
      <td><a href={`/products/${product.slug}`}>{product.name}</a></td>
      <td class="number">{quantity}</td>
      <td class="number">{formatPrice(product.price * quantity)}</td>
      <td>
        <button class="button" type="button" onClick={() => removeFromCart(product.slug)}>
          Remove
        </button>
      </td>
    </tr>
  );
}

export default function Cart() {
  usePageMeta({ title: 'Cart' });
  const lines = Object.entries(cartLines.value);
  if (lines.length === 0) {
    return (
      <section class="prose">
        <h1>Your cart</h1>
        <p>Your cart is empty. <a href="/products">Browse the products.</a></p>
      </section>
    );
  }
  return (
    <section>
      <h1>Your cart</h1>
      <table class="cart">
        <tbody>
          {lines.map(([slug, quantity]) => (
            <CartLine key={slug} product={findProduct(slug)} quantity={quantity} />
          ))}
        </tbody>
        <tfoot>
          <tr><th>Total</th><td /><td class="number">{formatPrice(cartTotal.value)}</td><td /></tr>
        </tfoot>
      </table>
    </section>
  );
}
