// crypto.getRandomValues and crypto.randomUUID (WebCrypto, without subtle).
// A script cannot read the operating system's entropy, so the engine seeds a
// ChaCha20 generator with os.urandom bytes at load and mixes in fresh ones at
// the start of every render.
import { rngChacha20 } from "@noble/ciphers/chacha.js";

// WebCrypto's per-call limit on getRandomValues, in bytes.
const MAX_RANDOM_BYTES = 65536;

const INTEGER_ARRAYS = [
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array,
  Int32Array, Uint32Array, BigInt64Array, BigUint64Array,
];

let generator = null;

const fromHex = (hex) => Uint8Array.from(hex.match(/../g), (pair) => parseInt(pair, 16));

/** Mix host entropy (hex) into the generator, creating it on first use. */
export const addEntropy = (hex) => {
  const seed = fromHex(hex);
  if (generator === null) generator = rngChacha20(seed);
  else generator.addEntropy(seed);
};

const getRandomValues = (array) => {
  if (!INTEGER_ARRAYS.some((type) => array instanceof type)) {
    throw new DOMException("The data argument must be an integer-type TypedArray", "TypeMismatchError");
  }
  if (array.byteLength > MAX_RANDOM_BYTES) {
    throw new DOMException(
      `The ArrayBufferView's byte length (${array.byteLength}) exceeds the number of bytes of entropy available via this API (${MAX_RANDOM_BYTES})`,
      "QuotaExceededError",
    );
  }
  const bytes = generator.randomBytes(array.byteLength);
  new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(bytes);
  return array;
};

const randomUUID = () => {
  const bytes = generator.randomBytes(16);
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
};

export const crypto = Object.freeze({ getRandomValues, randomUUID });
