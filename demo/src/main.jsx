/**
 * Client entry: hydrates the server's markup with the API data the server
 * rendered it from, then restores the saved cart.
 */
import { hydrate } from 'preact';
import { App } from './app.jsx';
import { resourcesFromDocument } from './data/resources.js';
import { persistCart } from './state/cart.js';
import './styles.css';

const root = document.getElementById('app');
hydrate(<App resources={resourcesFromDocument(document)} />, root);
// Browser tests wait for this attribute before they click anything.
root.dataset.hydrated = 'true';
persistCart(window.localStorage);
