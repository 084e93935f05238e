/**
 * The API upstream for the proxy benchmark: node:http answering every request
 * with one fixed JSON body. Prints "listening on PORT" for an ephemeral
 * loopback port.
 *
 * Usage: node perf/upstream.mjs [BODY_BYTES]
 */
import http from 'node:http';

const size = Number(process.argv[2] ?? '1024');
const body = Buffer.from(JSON.stringify({ items: 'x'.repeat(Math.max(size - 13, 0)) }));

const server = http.createServer((request, response) => {
  request.resume();
  request.on('end', () => {
    response.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': body.length,
    });
    response.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => console.log(`listening on ${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
