/**
 * Benchmark page: 500 product cards with several levels of components each. It
 * exists to give render benchmarks a page that costs milliseconds, not
 * microseconds, and it is not linked from the shop.
 */
import { allProducts, formatPrice } from '../data/catalog.js';
import { AddToCart } from '../components/AddToCart.jsx';
import { ProductArt } from '../components/ProductArt.jsx';
import { Rating } from '../components/Rating.jsx';
import { usePageMeta } from '../meta.js';

/** Number of cards on the page. The catalog repeats to fill them. */
export const HEAVY_CARD_COUNT = 500;

// Illustrative rates for the price breakdown, in basis points and cents.
const TAX_BASIS_POINTS = 825;
const SHIPPING_CENTS = 499;

function heavyItems() {
  const products = allProducts();
  return Array.from({ length: HEAVY_CARD_COUNT }, (_, index) => ({
    index,
    product: products[index % products.length],
  }));
}

function SpecRow({ label, value }) {
  return (
    <tr>
      <th scope="row">{label}</th>
      <td>{value}</td>
    </tr>
  );
}

function SpecTable({ product, index }) {
  return (
    <table class="specs">
      <tbody>
        <SpecRow label="Item" value={`#${String(index + 1).padStart(4, '0')}`} />
        <SpecRow label="Category" value={product.category} />
        <SpecRow label="Stock" value={product.stock} />
        <SpecRow label="Rating" value={<Rating value={product.rating} />} />
      </tbody>
    </table>
  );
}

function PriceBreakdown({ cents }) {
  const tax = Math.round((cents * TAX_BASIS_POINTS) / 10000);
  return (
    <dl class="breakdown">
      <dt>Price</dt>
      <dd>{formatPrice(cents)}</dd>
      <dt>Tax</dt>
      <dd>{formatPrice(tax)}</dd>
      <dt>Shipping</dt>
      <dd>{formatPrice(SHIPPING_CENTS)}</dd>
      <dt>Total</dt>
      <dd>{formatPrice(cents + tax + SHIPPING_CENTS)}</dd>
    </dl>
  );
}

function TagList({ product }) {
  const tags = [product.category, product.stock > 0 ? 'in stock' : 'sold out'];
  if (product.rating >= 4.5) tags.push('top rated');
  return (
    <ul class="chips">
      {tags.map((tag) => <li key={tag} class="chip">{tag}</li>)}
    </ul>
  );
}

function HeavyCard({ product, index }) {
  return (
    <article class="card card--heavy">
      <ProductArt product={product} />
      <div class="card__body">
        <h3 class="card__name"><a href={`/products/${product.slug}`}>{product.name}</a></h3>
        <TagList product={product} />
        <SpecTable product={product} index={index} />
        <PriceBreakdown cents={product.price} />
        <p class="card__description">{product.description}</p>
        <AddToCart product={product} />
      </div>
    </article>
  );
}

export default function Heavy() {
  usePageMeta({ title: 'Benchmark page', description: `${HEAVY_CARD_COUNT} products.` });
  return (
    <section>
      <h1>{HEAVY_CARD_COUNT} products</h1>
      <div class="grid">
        {heavyItems().map(({ index, product }) => (
          <HeavyCard key={index} product={product} index={index} />
        ))}
      </div>
    </section>
  );
}
