/**
 * Build dist/server/bundle.js: the server entry and everything it imports, as
 * one IIFE with no module system, for a bare V8 context.
 *
 * esbuild rather than Vite's SSR build: with `bundle` on and `splitting` off,
 * esbuild turns the lazy route's import() into a call into the same file, so
 * one IIFE comes out of three options. Vite 8 needs SSR mode, `noExternal`, an
 * IIFE output format and disabled code splitting to get the same file.
 */
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';

const OUTFILE = 'dist/server/bundle.js';

await build({
  entryPoints: ['src/server.jsx'],
  outfile: OUTFILE,
  bundle: true,
  format: 'iife',
  // Neutral: no Node built-ins and no browser globals are assumed.
  platform: 'neutral',
  mainFields: ['module', 'main'],
  conditions: ['import', 'module', 'default'],
  target: 'es2022',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  legalComments: 'eof',
  logLevel: 'warning',
});

// Fail the build, rather than the first render, if a module system survived.
const bundle = await readFile(OUTFILE, 'utf8');
for (const pattern of [/\bimport\s*\(/, /\brequire\s*\(/, /^\s*(import|export)\s/m]) {
  if (pattern.test(bundle)) {
    throw new Error(`${OUTFILE} still contains ${pattern}; the render workers cannot load modules`);
  }
}
console.log(`${OUTFILE}: ${bundle.length} bytes`);
