// Render routes with a bundle in Node, the way enddel's worker does: load it
// as a classic script, set location from the origin and the URL, await
// renderPage. Usage: node render-node.mjs BUNDLE ORIGIN URL... ; prints JSON.
import fs from "node:fs";
import vm from "node:vm";

const [bundle, origin, ...urls] = process.argv.slice(2);
vm.runInThisContext(fs.readFileSync(bundle, "utf8"), { filename: bundle });

const pages = {};
for (const url of urls) {
  globalThis.location = new URL(url, origin);
  const result = await globalThis.renderPage(url);
  pages[url] = typeof result === "string" ? result : result.html;
  delete globalThis.location;
}
process.stdout.write(JSON.stringify(pages));
