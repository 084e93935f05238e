import { useLocation } from 'preact-iso';
import { SHOP_NAME } from '../meta.js';
import { cartCount } from '../state/cart.js';

const NAV_LINKS = [
  ['/', 'Home'],
  ['/products', 'Products'],
  ['/about', 'About'],
];

function Header() {
  const { path } = useLocation();
  return (
    <header class="header">
      <a class="header__brand" href="/">{SHOP_NAME}</a>
      <nav class="header__nav">
        {NAV_LINKS.map(([href, label]) => (
          <a key={href} href={href} class={path === href ? 'active' : undefined}>{label}</a>
        ))}
      </nav>
      <a class="header__cart" href="/cart">
        Cart <span class="badge" data-testid="cart-count">{cartCount.value}</span>
      </a>
    </header>
  );
}

function Footer() {
  return (
    <footer class="footer">
      <p>A demo shop rendered on the server by enddel. Nothing here is for sale.</p>
    </footer>
  );
}

export function Layout({ children }) {
  return (
    <div class="page">
      <Header />
      <main class="main">{children}</main>
      <Footer />
    </div>
  );
}
