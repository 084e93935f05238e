import { allProducts, pageCount, productPage } from '../data/catalog.js';
import { ProductGrid } from '../components/ProductCard.jsx';
import { usePageMeta } from '../meta.js';
import NotFound from './NotFound.jsx';

/**
 * Parse the `page` query value: absent means 1, `all` means every product, and
 * anything else must be a positive decimal integer.
 */
function parsePage(value) {
  if (value === undefined || value === '') return 1;
  if (value === 'all') return 'all';
  return /^[0-9]+$/.test(value) ? Number(value) : null;
}

function Pagination({ current, count }) {
  const pages = Array.from({ length: count }, (_, i) => i + 1);
  return (
    <nav class="pagination" aria-label="Product pages">
      {current > 1 && <a href={`/products?page=${current - 1}`} rel="prev">← Previous</a>}
      {pages.map((page) =>
        page === current ? (
          <span key={page} class="pagination__current" aria-current="page">{page}</span>
        ) : (
          <a key={page} href={`/products?page=${page}`}>{page}</a>
        ),
      )}
      <a href="/products?page=all">All</a>
      {current < count && <a href={`/products?page=${current + 1}`} rel="next">Next →</a>}
    </nav>
  );
}

function ProductListView({ page, products }) {
  const count = pageCount();
  const heading = page === 'all' ? 'All products' : `Products, page ${page} of ${count}`;
  usePageMeta({ title: heading, description: `${allProducts().length} products.` });
  return (
    <section>
      <h1>{heading}</h1>
      <ProductGrid products={products} />
      <Pagination current={page === 'all' ? 0 : page} count={count} />
    </section>
  );
}

export default function ProductList({ query }) {
  const page = parsePage(query.page);
  const products = page === 'all' ? allProducts() : productPage(page);
  return products ? <ProductListView page={page} products={products} /> : <NotFound />;
}
