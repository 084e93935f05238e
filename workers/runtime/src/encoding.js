// TextEncoder and TextDecoder for UTF-8 (WHATWG Encoding Standard). The UTF-8
// decoder is the standard's algorithm: each maximal invalid subpart becomes one
// U+FFFD, or a TypeError when fatal is set. Other labels raise a RangeError,
// as Node's small-icu builds do for encodings they lack.
const UTF8_LABELS = new Set(["utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"]);

export class TextEncoder {
  get encoding() {
    return "utf-8";
  }
  encode(input = "") {
    const text = String(input).toWellFormed();
    const bytes = new Uint8Array(text.length * 3);
    return bytes.slice(0, this.encodeInto(text, bytes).written);
  }
  encodeInto(source, destination) {
    const text = String(source);
    let read = 0;
    let written = 0;
    for (const char of text) {
      let point = char.codePointAt(0);
      if (point >= 0xd800 && point <= 0xdfff) point = 0xfffd;
      const size = point < 0x80 ? 1 : point < 0x800 ? 2 : point < 0x10000 ? 3 : 4;
      if (written + size > destination.length) break;
      if (size === 1) {
        destination[written] = point;
      } else {
        const lead = [0, 0, 0xc0, 0xe0, 0xf0][size];
        destination[written] = lead | (point >> (6 * (size - 1)));
        for (let i = 1; i < size; i++) destination[written + i] = 0x80 | ((point >> (6 * (size - 1 - i))) & 0x3f);
      }
      written += size;
      read += char.length;
    }
    return { read, written };
  }
}

const toBytes = (input) => {
  if (input === undefined) return new Uint8Array(0);
  if (input instanceof ArrayBuffer || input instanceof SharedArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  throw new TypeError('The "input" argument must be an instance of ArrayBuffer or ArrayBufferView');
};

export class TextDecoder {
  #fatal;
  #ignoreBOM;
  #pending = [];
  #bomSeen = false;

  constructor(label = "utf-8", options = {}) {
    if (!UTF8_LABELS.has(String(label).trim().toLowerCase())) {
      throw new RangeError(`The "${label}" encoding is not supported`);
    }
    this.#fatal = Boolean(options.fatal);
    this.#ignoreBOM = Boolean(options.ignoreBOM);
  }
  get encoding() {
    return "utf-8";
  }
  get fatal() {
    return this.#fatal;
  }
  get ignoreBOM() {
    return this.#ignoreBOM;
  }

  decode(input, options = {}) {
    const stream = Boolean(options.stream);
    const bytes = [...this.#pending, ...toBytes(input)];
    const { text, rest } = this.#decodeBytes(bytes, stream);
    this.#pending = rest;
    let result = text;
    if (!this.#ignoreBOM && !this.#bomSeen && result.length > 0) {
      if (result.charCodeAt(0) === 0xfeff) result = result.slice(1);
      this.#bomSeen = true;
    }
    if (!stream) this.#bomSeen = false;
    return result;
  }

  #invalid() {
    if (this.#fatal) throw new TypeError("The encoded data was not valid for encoding utf-8");
    return "\ufffd";
  }

  // Returns the decoded text and, when streaming, the bytes of an incomplete
  // sequence at the end, kept for the next call.
  #decodeBytes(bytes, stream) {
    const parts = [];
    let i = 0;
    while (i < bytes.length) {
      const lead = bytes[i];
      if (lead < 0x80) {
        parts.push(String.fromCharCode(lead));
        i += 1;
        continue;
      }
      let needed;
      let point;
      let lower = 0x80;
      let upper = 0xbf;
      if (lead >= 0xc2 && lead <= 0xdf) [needed, point] = [1, lead & 0x1f];
      else if (lead >= 0xe0 && lead <= 0xef) {
        [needed, point] = [2, lead & 0x0f];
        if (lead === 0xe0) lower = 0xa0;
        if (lead === 0xed) upper = 0x9f;
      } else if (lead >= 0xf0 && lead <= 0xf4) {
        [needed, point] = [3, lead & 0x07];
        if (lead === 0xf0) lower = 0x90;
        if (lead === 0xf4) upper = 0x8f;
      } else {
        parts.push(this.#invalid());
        i += 1;
        continue;
      }
      let j = i + 1;
      let complete = true;
      for (let k = 0; k < needed; k++, j++) {
        if (j >= bytes.length) {
          complete = false;
          break;
        }
        const byte = bytes[j];
        if (byte < lower || byte > upper) break;
        point = (point << 6) | (byte & 0x3f);
        [lower, upper] = [0x80, 0xbf];
        if (k === needed - 1) {
          parts.push(String.fromCodePoint(point));
          j += 1;
          i = j;
          complete = null;
          break;
        }
      }
      if (complete === null) continue;
      if (!complete && stream) return { text: parts.join(""), rest: bytes.slice(i) };
      // A truncated or broken sequence: one U+FFFD for its valid prefix.
      parts.push(this.#invalid());
      i = j;
    }
    return { text: parts.join(""), rest: [] };
  }
}
