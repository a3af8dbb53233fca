// Just enough of BOLT11 to check an invoice before showing it: the bech32 checksum, the
// network, the amount, the payment hash, the expiry and the payee, recovered from the
// signature (secp256k1 public key recovery over SHA-256 of the human-readable part and the
// data, as staticip checks it). The arithmetic is below, written for this check only: plain
// BigInt, tens of milliseconds, not constant time (fine for verifying a public signature).

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values) {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GEN[i];
  }
  return chk >>> 0;
}

function hrpExpand(hrp) {
  const out = [];
  for (const c of hrp) out.push(c.charCodeAt(0) >> 5);
  out.push(0);
  for (const c of hrp) out.push(c.charCodeAt(0) & 31);
  return out;
}

const NETWORKS = { bcrt: "regtest", bc: "bitcoin", tbs: "signet", tb: "testnet" };
// Millisatoshis per unit of each amount multiplier, as [numerator, denominator].
const MSAT = { "": [100000000000n, 1n], m: [100000000n, 1n], u: [100000n, 1n], n: [100n, 1n], p: [1n, 10n] };

export class Bolt11Error extends Error {}

// Decodes `s`; throws Bolt11Error with a short English reason when it is not an invoice.
export function decodeBolt11(s) {
  const str = s.trim().toLowerCase();
  const sep = str.lastIndexOf("1");
  if (!str.startsWith("ln") || sep < 4 || str.length - sep < 7 + 104 + 6 + 1) throw new Bolt11Error("not a BOLT11 invoice");
  const hrp = str.slice(0, sep);
  const words = [];
  for (const c of str.slice(sep + 1)) {
    const v = CHARSET.indexOf(c);
    if (v < 0) throw new Bolt11Error("invalid character");
    words.push(v);
  }
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) throw new Bolt11Error("bad checksum");
  const m = /^ln(bcrt|bc|tbs|tb)(?:(\d+)([munp]?))?$/.exec(hrp);
  if (!m) throw new Bolt11Error("unknown network or amount");
  let amountMsat = null;
  if (m[2] !== undefined) {
    const [num, den] = MSAT[m[3]];
    const raw = BigInt(m[2]) * num;
    if (raw % den !== 0n) throw new Bolt11Error("amount below a millisatoshi");
    amountMsat = raw / den;
  }
  const data = words.slice(0, words.length - 6 - 104);
  const num = (ws) => ws.reduce((a, w) => a * 32 + w, 0);
  const timestamp = num(data.slice(0, 7));
  let paymentHash = null;
  let payeeField = null;
  let expiry = 3600;
  for (let i = 7; i + 3 <= data.length; ) {
    const tag = CHARSET[data[i]];
    const len = data[i + 1] * 32 + data[i + 2];
    const field = data.slice(i + 3, i + 3 + len);
    if (field.length !== len) throw new Bolt11Error("truncated field");
    if (tag === "p" && len === 52) {
      let bits = 0n;
      for (const w of field) bits = (bits << 5n) | BigInt(w);
      paymentHash = (bits >> 4n).toString(16).padStart(64, "0");
    } else if (tag === "x") {
      expiry = num(field);
    } else if (tag === "n" && len === 53) {
      payeeField = Array.from(toBytes(field).slice(0, 33), (b) => b.toString(16).padStart(2, "0")).join("");
    }
    i += 3 + len;
  }
  if (!paymentHash) throw new Bolt11Error("no payment hash");
  // Signed: SHA-256 of the human-readable part's bytes and the data words as bytes (zero
  // bits appended to the last byte); the signature is r ‖ s ‖ recovery id.
  const msg = new Uint8Array([...new TextEncoder().encode(hrp), ...toBytes(data)]);
  const sig = toBytes(words.slice(data.length, data.length + 104));
  const payee = recoverPublicKey(sha256(msg), sig.slice(0, 64), sig[64]);
  if (!payee) throw new Bolt11Error("bad signature");
  if (payeeField && payeeField !== payee) throw new Bolt11Error("the signature is not the named payee's");
  return { network: NETWORKS[m[1]], amountMsat, timestamp, expiry, paymentHash, payee };
}

// 5-bit words as bytes, the last one padded with zero bits.
function toBytes(words) {
  const out = [];
  let acc = 0;
  let bits = 0;
  for (const w of words) {
    acc = (acc << 5) | w;
    bits += 5;
    while (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out.push((acc << (8 - bits)) & 0xff);
  return new Uint8Array(out);
}

// ---------- SHA-256 (FIPS 180-4) ----------

// Integer k-th root, rounded down (Newton's method from above).
function iroot(v, k) {
  const K = BigInt(k);
  let x = 1n << BigInt(Math.ceil(v.toString(2).length / k));
  for (;;) {
    const y = ((K - 1n) * x + v / x ** (K - 1n)) / K;
    if (y >= x) return x;
    x = y;
  }
}

// The first 64 primes; the constants are the first 32 bits of the fractional parts of their
// square roots (H) and cube roots (K), computed exactly rather than copied.
const PRIMES = [];
for (let n = 2; PRIMES.length < 64; n++) if (PRIMES.every((p) => n % p)) PRIMES.push(n);
const frac32 = (p, k) => Number(iroot(BigInt(p) << BigInt(32 * k), k) & 0xffffffffn);
const H0 = PRIMES.slice(0, 8).map((p) => frac32(p, 2));
const K256 = PRIMES.map((p) => frac32(p, 3));

export function sha256(bytes) {
  const len = bytes.length;
  const padded = new Uint8Array(((len + 9 + 63) >> 6) << 6);
  padded.set(bytes);
  padded[len] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(len / 0x20000000));
  view.setUint32(padded.length - 4, (len * 8) >>> 0);
  const h = H0.slice();
  const w = new Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i]) | 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      [k, g, f, e, d, c, b, a] = [g, f, e, (d + t1) | 0, c, b, a, (t1 + t2) | 0];
    }
    [a, b, c, d, e, f, g, k].forEach((v, i) => (h[i] = (h[i] + v) | 0));
  }
  const out = new Uint8Array(32);
  h.forEach((v, i) => new DataView(out.buffer).setUint32(4 * i, v >>> 0));
  return out;
}

// ---------- secp256k1 ----------

const P = 2n ** 256n - 2n ** 32n - 977n;
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const G = [
  0x79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798n,
  0x483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8n,
];

const mod = (a, m = P) => ((a % m) + m) % m;

// a^-1 mod m (extended Euclid; m prime, a not a multiple of m).
function inv(a, m = P) {
  let [r0, r1, s0, s1] = [m, mod(a, m), 0n, 1n];
  while (r1 !== 0n) {
    const q = r0 / r1;
    [r0, r1, s0, s1] = [r1, r0 - q * r1, s1, s0 - q * s1];
  }
  return mod(s0, m);
}

function pow(b, e, m = P) {
  let r = 1n;
  for (b = mod(b, m); e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
}

// Affine points; null is the point at infinity.
function add(A, B) {
  if (!A) return B;
  if (!B) return A;
  const [x1, y1] = A;
  const [x2, y2] = B;
  let l;
  if (x1 === x2) {
    if (mod(y1 + y2) === 0n) return null;
    l = mod(3n * x1 * x1 * inv(2n * y1));
  } else {
    l = mod((y2 - y1) * inv(x2 - x1));
  }
  const x3 = mod(l * l - x1 - x2);
  return [x3, mod(l * (x1 - x3) - y1)];
}

function mul(k, A) {
  let R = null;
  for (; k > 0n; k >>= 1n, A = add(A, A)) if (k & 1n) R = add(R, A);
  return R;
}

const big = (bytes) => bytes.reduce((a, b) => (a << 8n) | BigInt(b), 0n);

// The compressed public key (66 hex digits) that made the 64-byte signature `sig` (r ‖ s)
// of the 32-byte `hash`, with recovery id `recid` (0..3); null when there is none.
export function recoverPublicKey(hash, sig, recid) {
  const r = big(sig.slice(0, 32));
  const s = big(sig.slice(32, 64));
  if (r === 0n || r >= N || s === 0n || s >= N || recid < 0 || recid > 3) return null;
  const x = r + (recid & 2 ? N : 0n);
  if (x >= P) return null;
  const y2 = mod(x * x * x + 7n);
  let y = pow(y2, (P + 1n) / 4n);
  if ((y * y) % P !== y2) return null;
  if ((y & 1n) !== BigInt(recid & 1)) y = P - y;
  const ri = inv(r, N);
  const e = mod(big(hash), N);
  const Q = add(mul(mod(s * ri, N), [x, y]), mul(mod(-e * ri, N), G));
  if (!Q) return null;
  return (Q[1] & 1n ? "03" : "02") + Q[0].toString(16).padStart(64, "0");
}

