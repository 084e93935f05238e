import { usePageMeta } from '../meta.js';

/** About page. The router loads it lazily, so it is a separate client chunk. */
export default function About() {
  usePageMeta({ title: 'About', description: 'What this shop is.' });
  return (
    <section class="prose">
      <h1>About this shop</h1>
      <p>
        Enddel Shop is the demo application of enddel, a Python server that renders
        Preact pages with V8. Every page you load directly is rendered on the server
        and then hydrated, so links switch pages in the browser without a reload.
      </p>
      <p>
        This page is a lazy route: the browser downloads its code only when you open
        it, while the server renders it in the first response.
      </p>
    </section>
  );
}
