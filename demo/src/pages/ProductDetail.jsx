import { findProduct, formatPrice } from '../data/catalog.js';
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

export default function ProductDetail({ params }) {
  const product = findProduct(params.slug);
  return product ? <ProductView product={product} /> : <NotFound />;
}
