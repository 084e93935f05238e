import { categories, featuredProducts } from '../data/catalog.js';
import { ProductGrid } from '../components/ProductCard.jsx';
import { usePageMeta } from '../meta.js';

const FEATURED_COUNT = 8;

export default function Home() {
  usePageMeta({ title: '', description: 'Everyday things made to last.' });
  return (
    <>
      <section class="hero">
        <h1>Everyday things, made to last</h1>
        <p>Kitchen tools, desk gear, textiles and lamps from small workshops.</p>
        <a class="button button--primary" href="/products">Browse all products</a>
      </section>
      <section>
        <h2>Categories</h2>
        <ul class="chips">
          {categories().map((category) => <li key={category} class="chip">{category}</li>)}
        </ul>
      </section>
      <section>
        <h2>Featured</h2>
        <ProductGrid products={featuredProducts(FEATURED_COUNT)} />
      </section>
    </>
  );
}
