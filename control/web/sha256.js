// SHA-256 in plain JS (FIPS 180-4), one implementation for the page: the proof of key
// possession needs it where crypto.subtle is missing (a page on plain HTTP), and the BOLT11
// payee check hashes the signed part of the invoice. Takes bytes (an array or Uint8Array),
// returns a Uint8Array of 32. Constants: the primes' root fractions.
const SK = [], SH = [];
for (let p = 2, n = 0; n < 64; p++) {
  let q = 2;
  while (p % q) q++;
  if (q < p) continue;
  const f = (x) => ((x - Math.floor(x)) * 2 ** 32) >>> 0;
  if (n < 8) SH[n] = f(Math.sqrt(p));
  SK[n++] = f(Math.cbrt(p));
}
const rr = (v, n) => (v >>> n) | (v << (32 - n));
export function sha256(d) {
  const l = d.length, n = ((l + 72) >> 6) << 4, w = new Uint32Array(n), x = new Uint32Array(64), h = SH.slice();
  for (let i = 0; i < l; i++) w[i >> 2] |= d[i] << (24 - 8 * (i & 3));
  w[l >> 2] |= 0x80 << (24 - 8 * (l & 3));
  w[n - 1] = l * 8;
  for (let o = 0; o < n; o += 16) {
    for (let i = 0; i < 64; i++) {
      const a = x[i - 15], b = x[i - 2];
      x[i] = i < 16 ? w[o + i] : x[i - 16] + (rr(a, 7) ^ rr(a, 18) ^ (a >>> 3)) + x[i - 7] + (rr(b, 17) ^ rr(b, 19) ^ (b >>> 10));
    }
    let [a, b, c, d2, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = k + (rr(e, 6) ^ rr(e, 11) ^ rr(e, 25)) + ((e & f) ^ (~e & g)) + SK[i] + x[i];
      const t2 = (rr(a, 2) ^ rr(a, 13) ^ rr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      [k, g, f, e, d2, c, b, a] = [g, f, e, (d2 + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    [a, b, c, d2, e, f, g, k].forEach((v, i) => (h[i] = (h[i] + v) >>> 0));
  }
  return Uint8Array.from({ length: 32 }, (_, i) => h[i >> 2] >>> (24 - 8 * (i & 3)));
}
