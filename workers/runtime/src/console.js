// console: every line is collected in memory and handed to Python with the
// render's result, because a render worker's stdout carries frames and V8 has
// no output of its own. Node's console.log formatting (util.format) is
// followed for the %s %d %i %f %j %o %O %c %% directives.
import inspect from "object-inspect";

// Bounds per render (and for the bundle load), so a logging loop cannot grow a
// RESULT frame without limit. Lines past either bound are counted, not kept.
const MAX_LINES = 200;
const MAX_BYTES = 64 * 1024;
const MAX_LINE_CHARS = 8 * 1024;

let lines = [];
let bytes = 0;
let dropped = 0;
let groupIndent = "";

const show = (value) => {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack || String(value);
  return inspect(value, { depth: 4 });
};

const applyDirective = (directive, value) => {
  switch (directive) {
    case "s":
      return typeof value === "string" ? value : show(value);
    case "d":
    case "i": {
      if (typeof value === "bigint") return `${value}n`;
      const number = Number(value);
      return String(directive === "i" ? Math.trunc(number) : number);
    }
    case "f":
      return String(parseFloat(value));
    case "j":
      try {
        return JSON.stringify(value);
      } catch {
        return "[Circular]";
      }
    default:
      return show(value);
  }
};

export const format = (...args) => {
  if (typeof args[0] !== "string") return args.map(show).join(" ");
  let used = 1;
  const head = args[0].replace(/%([sdifjoOc%])/g, (match, directive) => {
    if (directive === "%") return "%";
    if (used >= args.length) return match;
    const value = args[used++];
    return directive === "c" ? "" : applyDirective(directive, value);
  });
  return [head, ...args.slice(used).map(show)].join(" ");
};

const emit = (level, text) => {
  let line = groupIndent ? groupIndent + text.replaceAll("\n", "\n" + groupIndent) : text;
  if (line.length > MAX_LINE_CHARS) {
    line = line.slice(0, MAX_LINE_CHARS) + ` ... (${line.length - MAX_LINE_CHARS} more characters)`;
  }
  if (lines.length >= MAX_LINES || bytes + line.length > MAX_BYTES) {
    dropped += 1;
    return;
  }
  lines.push([level, line]);
  bytes += line.length;
};

/** Return the lines collected since the last call, ending with a truncation marker. */
export const takeLines = () => {
  const taken = lines;
  if (dropped > 0) taken.push(["warn", `console: truncated ${dropped} lines`]);
  lines = [];
  bytes = 0;
  dropped = 0;
  groupIndent = "";
  return taken;
};

export const reportUncaught = (error) => emit("error", "Uncaught " + show(error));

const counts = new Map();
const timers = new Map();
const label = (value) => (value === undefined ? "default" : String(value));

export const console = {
  log: (...args) => emit("info", format(...args)),
  info: (...args) => emit("info", format(...args)),
  debug: (...args) => emit("debug", format(...args)),
  warn: (...args) => emit("warn", format(...args)),
  error: (...args) => emit("error", format(...args)),
  trace: (...args) => emit("debug", "Trace: " + format(...args) + "\n" + new Error().stack.split("\n").slice(2).join("\n")),
  dir: (value) => emit("info", show(value)),
  dirxml: (...args) => emit("info", format(...args)),
  table: (...args) => emit("info", format(...args)),
  assert: (condition, ...args) => {
    if (!condition) emit("error", "Assertion failed" + (args.length ? ": " + format(...args) : ""));
  },
  count: (name) => {
    const key = label(name);
    counts.set(key, (counts.get(key) || 0) + 1);
    emit("info", `${key}: ${counts.get(key)}`);
  },
  countReset: (name) => counts.delete(label(name)),
  group: (...args) => {
    if (args.length) emit("info", format(...args));
    groupIndent += "  ";
  },
  groupCollapsed: (...args) => console.group(...args),
  groupEnd: () => {
    groupIndent = groupIndent.slice(2);
  },
  time: (name) => timers.set(label(name), Date.now()),
  timeLog: (name, ...args) => {
    const key = label(name);
    if (!timers.has(key)) return emit("warn", `No such label '${key}' for console.timeLog()`);
    emit("info", [`${key}: ${Date.now() - timers.get(key)}ms`, ...args.map(show)].join(" "));
  },
  timeEnd: (name) => {
    const key = label(name);
    if (!timers.has(key)) return emit("warn", `No such label '${key}' for console.timeEnd()`);
    emit("info", `${key}: ${Date.now() - timers.get(key)}ms`);
    timers.delete(key);
  },
};
