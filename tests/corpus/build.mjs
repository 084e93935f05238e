// Build every app in src/ twice: with esbuild and with Vite's SSR build. Each
// output is one classic script that sets globalThis.renderPage.
import { build as esbuild } from "esbuild";
import { build as vite } from "vite";

const apps = ["iso", "router"];
const alias = { react: "preact/compat", "react-dom": "preact/compat" };

for (const app of apps) {
  await esbuild({
    entryPoints: [`src/${app}.jsx`],
    outfile: `dist/esbuild/${app}.js`,
    bundle: true,
    format: "iife",
    platform: "neutral",
    mainFields: ["module", "main"],
    jsx: "automatic",
    jsxImportSource: "preact",
    alias,
    // As for any non-Node target: enddel, like a browser, has no process.
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "warning",
  });
  await vite({
    configFile: false,
    logLevel: "warn",
    resolve: { alias },
    oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
    ssr: { noExternal: true, target: "webworker" },
    build: {
      ssr: `src/${app}.jsx`,
      outDir: `dist/vite/${app}`,
      emptyOutDir: true,
      minify: false,
      rollupOptions: { output: { format: "iife", entryFileNames: "bundle.js" } },
    },
  });
}
