import { formatPrice } from '../data/catalog.js';
import { AddToCart } from './AddToCart.jsx';
import { ProductArt } from './ProductArt.jsx';
import { Rating } from './Rating.jsx';

export function ProductCard({ product }) {
  const href = `/products/${product.slug}`;
  return (
    <article class="card">
      <a class="card__art" href={href} tabIndex={-1}>
        <ProductArt product={product} />
      </a>
      <div class="card__body">
        <p class="card__category">{product.category}</p>
        <h3 class="card__name"><a href={href}>{product.name}</a></h3>
        <Rating value={product.rating} />
        <p class="card__price">{formatPrice(product.price)}</p>
        <AddToCart product={product} />
      </div>
    </article>
  );
}

export function ProductGrid({ products }) {
  return (
    <div class="grid">
      {products.map((product) => <ProductCard key={product.slug} product={product} />)}
    </div>
  );
}
