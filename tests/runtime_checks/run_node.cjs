// Load a script the way a render worker does (as a classic script in the
// global scope) and print JSON.stringify(await runChecks()).
const fs = require("node:fs");
const vm = require("node:vm");

vm.runInThisContext(fs.readFileSync(process.argv[2], "utf8"), { filename: process.argv[2] });
// AbortSignal.timeout's timer does not keep Node's event loop alive, so an
// interval holds it open until the checks finish.
const keepAlive = setInterval(() => {}, 1000);
globalThis.runChecks().then((results) => {
  clearInterval(keepAlive);
  process.stdout.write(JSON.stringify(results));
});
