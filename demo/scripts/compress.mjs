/**
 * Write .br and .gz variants next to every compressible file under a build
 * directory, for the static file server to send when the client accepts them.
 *
 * Usage: node scripts/compress.mjs DIR
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const COMPRESSIBLE = new Set(['.js', '.mjs', '.css', '.svg', '.json', '.html', '.txt', '.xml', '.map']);

// index.html is the server's page template: the server always splices the
// rendered page into it, so a precompressed copy of the raw template would
// never be the right response.
const SKIPPED = new Set(['index.html']);

async function* compressibleFiles(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* compressibleFiles(path);
    else if (entry.isFile() && COMPRESSIBLE.has(extname(entry.name)) && !SKIPPED.has(entry.name)) {
      yield path;
    }
  }
}

async function compressFile(path) {
  const data = await readFile(path);
  const brotli = brotliCompressSync(data, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
      // Every extension in COMPRESSIBLE is UTF-8 text.
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
    },
  });
  const gzip = gzipSync(data, { level: constants.Z_BEST_COMPRESSION });
  await writeFile(`${path}.br`, brotli);
  await writeFile(`${path}.gz`, gzip);
  return { size: data.length, brotli: brotli.length, gzip: gzip.length };
}

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/compress.mjs DIR (for example dist/client)');
  process.exit(2);
}
for await (const path of compressibleFiles(dir)) {
  const sizes = await compressFile(path);
  console.log(`${relative(dir, path)}: ${sizes.size} B, br ${sizes.brotli} B, gz ${sizes.gzip} B`);
}
