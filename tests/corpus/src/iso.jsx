// preact-iso app: lazy routes and async prerender, with a signal and a fetch-free
// data step that waits on a timer, as SSR code that awaits data does.
import { LocationProvider, Router, Route, lazy, prerender } from "preact-iso";
import { signal } from "@preact/signals";

const About = lazy(() => import("./pages/about.jsx"));
const visits = signal(0);

const Home = () => {
  visits.value += 1;
  const query = new URLSearchParams(location.search);
  return (
    <main>
      <h1>Home {query.get("tab") ?? "none"}</h1>
      <p>{new URL("./img/logo.png", location.href).pathname}</p>
    </main>
  );
};
const NotFound = () => <p class="missing">Not found: {location.pathname}</p>;

const App = ({ url }) => (
  <LocationProvider url={url}>
    <Router>
      <Route path="/" component={Home} />
      <Route path="/about/:name" component={About} />
      <Route default component={NotFound} />
    </Router>
  </LocationProvider>
);

globalThis.renderPage = async (url) => {
  await new Promise((resolve) => setTimeout(resolve, 0));
  const { html, links } = await prerender(<App url={url} />);
  return { html, head: `<meta name="links" content="${[...links].join(" ")}">` };
};
