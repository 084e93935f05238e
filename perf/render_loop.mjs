/**
 * The render ceiling in Node: render one URL in a tight loop in one V8
 * context, with no server around it.
 *
 * Usage: node perf/render_loop.mjs BUNDLE URL WARMUP_RENDERS RENDERS
 * Prints one JSON object: {"renders": N, "seconds_per_render": [...]}.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import vm from 'node:vm';

const [bundlePath, url, warmupArg, rendersArg] = process.argv.slice(2);
vm.runInThisContext(readFileSync(bundlePath, 'utf8'), { filename: bundlePath });

const warmup = Number(warmupArg);
const renders = Number(rendersArg);
for (let i = 0; i < warmup; i += 1) await globalThis.renderPage(url);

const seconds = [];
for (let i = 0; i < renders; i += 1) {
  const started = performance.now();
  const result = await globalThis.renderPage(url);
  // Touch the markup's length so the render's output counts as used.
  if (result.html.length === 0) throw new Error(`${url} rendered no markup`);
  seconds.push((performance.now() - started) / 1000);
}
console.log(JSON.stringify({ renders, seconds_per_render: seconds }));
