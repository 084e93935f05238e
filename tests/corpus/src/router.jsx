// preact-router app with @preact/signals and preact/compat components from
// react-feather (a React icon library), rendered with preact-render-to-string.
import { renderToString } from "preact-render-to-string";
import Router from "preact-router";
import { signal, computed } from "@preact/signals";
import { forwardRef, memo } from "preact/compat";
import { ShoppingCart, Star } from "react-feather";

const count = signal(2);
const label = computed(() => `${count.value} items`);

const Badge = memo(forwardRef(({ children }, ref) => <span ref={ref} class="badge">{children}</span>));

const Cart = () => (
  <div>
    <ShoppingCart size={18} />
    <Badge>{label}</Badge>
  </div>
);
const Product = ({ id }) => (
  <article>
    <Star color="gold" />
    <h1>Product {id}</h1>
    <p>{structuredClone({ id }).id === id ? "cloned" : "broken"}</p>
  </article>
);

globalThis.renderPage = (url) =>
  renderToString(
    <Router url={url}>
      <Cart path="/" />
      <Product path="/product/:id" />
      <div default>Nothing at {url}</div>
    </Router>,
  );
