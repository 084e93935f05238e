import { usePageMeta } from '../meta.js';

export default function NotFound() {
  usePageMeta({ title: 'Page not found', status: 404 });
  return (
    <section class="prose">
      <h1>Page not found</h1>
      <p>There is no page at this address.</p>
      <p><a class="button button--primary" href="/">Back to the shop</a></p>
    </section>
  );
}
