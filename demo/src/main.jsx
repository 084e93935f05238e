/** Client entry: hydrates the server's markup, then restores the saved cart. */
import { hydrate } from 'preact';
import { App } from './app.jsx';
import { persistCart } from './state/cart.js';
import './styles.css';

const root = document.getElementById('app');
hydrate(<App />, root);
// Browser tests wait for this attribute before they click anything.
root.dataset.hydrated = 'true';
persistCart(window.localStorage);
