// Client build of the demo shop. The server bundle is built by
// scripts/build-server.mjs from the same sources.
import { defineConfig } from 'vite';

export default defineConfig({
  // Vite 8 transforms JSX with Oxc; the automatic runtime imports from
  // preact/jsx-runtime, so components need no `h` import.
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: 'dist/client',
    emptyOutDir: true,
  },
});
