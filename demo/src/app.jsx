/**
 * The shop's component tree, shared by the client entry (main.jsx) and the
 * server entry (server.jsx).
 */
import { LocationProvider, Route, Router, lazy } from 'preact-iso';
import { Layout } from './components/Layout.jsx';
import { ResourceContext } from './data/resources.js';
import Cart from './pages/Cart.jsx';
import Heavy from './pages/Heavy.jsx';
import Home from './pages/Home.jsx';
import NotFound from './pages/NotFound.jsx';
import ProductDetail from './pages/ProductDetail.jsx';
import ProductList from './pages/ProductList.jsx';

// The lazy route: a separate chunk in the client build, inlined in the server
// bundle.
const About = lazy(() => import('./pages/About.jsx'));

/** Lazy route components, which the server loads before it renders. */
export const LAZY_ROUTES = [About];

/**
 * Render the shop. On the server `url` is the request's path and query. In the
 * browser it is omitted, and the router reads `location`. `resources` is the
 * ResourceStore that pages read API data from.
 */
export function App({ url, resources }) {
  return (
    <ResourceContext.Provider value={resources}>
      <LocationProvider url={url}>
        <Layout>
          <Router>
            <Route path="/" component={Home} />
            <Route path="/products" component={ProductList} />
            <Route path="/products/:slug" component={ProductDetail} />
            <Route path="/about" component={About} />
            <Route path="/cart" component={Cart} />
            <Route path="/heavy" component={Heavy} />
            <Route default component={NotFound} />
          </Router>
        </Layout>
      </LocationProvider>
    </ResourceContext.Provider>
  );
}
