/**
 * The Node peer: node:http in a cluster of N processes, each rendering the
 * server bundle on every request and splicing the result into index.html the
 * way enddel does (fragment at <!--ssr-outlet-->, head at <!--ssr-head-->).
 *
 * With PEER_CACHE=1 each process keeps rendered pages in an in-memory Map
 * keyed by the request URL, without expiry: the best case of a per-process
 * page cache.
 *
 * Usage: node perf/node_peer.mjs BUNDLE INDEX_HTML WORKERS
 * The primary prints "listening on PORT" once every worker listens on the
 * shared loopback port, and stops the workers on SIGTERM or SIGINT.
 */
import cluster from 'node:cluster';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const [bundlePath, indexPath, workersArg] = process.argv.slice(2);
const workerCount = Number(workersArg ?? '1');
const useCache = process.env.PEER_CACHE === '1';

function startPrimary() {
  // Port 0 in the primary: the first worker's listen picks an ephemeral port
  // and the cluster hands the same handle to every other worker.
  let listening = 0;
  let port = 0;
  for (let i = 0; i < workerCount; i += 1) cluster.fork();
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    port = address.port;
    if (listening === workerCount) console.log(`listening on ${port}`);
  });
  const stop = () => {
    for (const worker of Object.values(cluster.workers)) worker.process.kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function loadBundle() {
  // The bundle defines globalThis.renderPage; runInThisContext makes it a
  // plain function of this isolate, the fastest way Node can call it.
  vm.runInThisContext(readFileSync(bundlePath, 'utf8'), { filename: bundlePath });
  if (typeof globalThis.renderPage !== 'function') {
    throw new Error(`${bundlePath} does not define globalThis.renderPage`);
  }
}

function splitTemplate() {
  const template = readFileSync(indexPath, 'utf8');
  const [beforeOutlet, afterOutlet] = template.split('<!--ssr-outlet-->');
  const [beforeHead, betweenHeadAndOutlet] = beforeOutlet.split('<!--ssr-head-->');
  return { beforeHead, betweenHeadAndOutlet, afterOutlet };
}

async function renderDocument(url, parts) {
  const result = await globalThis.renderPage(url);
  const page = typeof result === 'string' ? { html: result } : result;
  const body = Buffer.from(
    parts.beforeHead + (page.head ?? '') + parts.betweenHeadAndOutlet + page.html +
      parts.afterOutlet,
  );
  return { status: page.status ?? 200, body };
}

function startWorker() {
  loadBundle();
  const parts = splitTemplate();
  const cache = new Map();
  const server = http.createServer(async (request, response) => {
    let page = useCache ? cache.get(request.url) : undefined;
    if (page === undefined) {
      page = await renderDocument(request.url, parts);
      if (useCache) cache.set(request.url, page);
    }
    response.writeHead(page.status, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Length': page.body.length,
    });
    response.end(page.body);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
}

if (cluster.isPrimary) startPrimary();
else startWorker();
