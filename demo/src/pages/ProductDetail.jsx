import { formatPrice, useProduct } from '../data/catalog.js';
import { AddToCart } from '../components/AddToCart.jsx';
import { ProductArt } from '../components/ProductArt.jsx';
import { Rating } from '../components/Rating.jsx';
import { usePageMeta } from '../meta.js';
import NotFound from './NotFound.jsx';

function StockNote({ stock }) {
  if (stock === 0) return <p class="stock stock--out">Sold out</p>;
  if (stock < 3) return <p class="stock stock--low">Only {stock} left</p>;
  return <p class="stock">In stock</p>;
}

function ProductView({ product }) {
  usePageMeta({ title: product.name, description: product.description });
  return (
    <article class="product">
      <ProductArt product={product} size="large" />
      <div class="product__info">
        <p class="card__category">{product.category}</p>
        <h1>{product.name}</h1>
        <Rating value={product.rating} />
        <p class="product__price">{formatPrice(product.price)}</p>
        <p class="product__description">{product.description}</p>
        <StockNote stock={product.stock} />
        <AddToCart product={product} />
        <p><a href="/products">← Back to all products</a></p>
      </div>
    </article>
  );
}

/**
 * The page for a product the API could not deliver. 503, because the failure is
 * the upstream's and may pass; the page cache never stores a 5xx page. The
 * reason is not shown to visitors: the resource store logged it.
 */
function ProductUnavailable() {
  usePageMeta({ title: 'Product unavailable', status: 503 });
  return (
    <section class="prose">
      <h1>Product unavailable</h1>
      <p>The shop could not load this product. Reload the page to try again.</p>
      <p><a href="/products">← Back to all products</a></p>
    </section>
  );
}

export default function ProductDetail({ params }) {
  const { product, failure } = useProduct(params.slug);
  if (failure) return <ProductUnavailable />;
  return product ? <ProductView product={product} /> : <NotFound />;
}
