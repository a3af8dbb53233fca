// Just enough of BOLT11 to check an invoice before showing it: the bech32 checksum, the
// network, the amount, the payment hash, the expiry, and the payee recovered from the
// signature (secp256k1 below, not constant time: nothing here is secret).
import { sha256 } from "./sha256.js";

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

const codes = (h) => [...h].map((c) => c.charCodeAt(0));
const hrpExpand = (h) => [...codes(h).map((c) => c >> 5), 0, ...codes(h).map((c) => c & 31)];

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
  let expiry = 3600;
  for (let i = 7; i + 3 <= data.length; ) {
    const tag = CHARSET[data[i]];
    const len = data[i + 1] * 32 + data[i + 2];
    const field = data.slice(i + 3, i + 3 + len);
    if (field.length !== len) throw new Bolt11Error("truncated field");
    if (tag === "p" && len === 52) {
      paymentHash = hex(bytes(field).slice(0, 32));
    } else if (tag === "x") {
      expiry = num(field);
    }
    i += 3 + len;
  }
  if (!paymentHash) throw new Bolt11Error("no payment hash");
  const payee = recover([...sha256([...codes(hrp), ...bytes(data)])], bytes(words.slice(data.length, -6)));
  if (!payee) throw new Bolt11Error("bad signature");
  return { network: NETWORKS[m[1]], amountMsat, timestamp, expiry, paymentHash, payee };
}

const hex = (b) => b.map((x) => x.toString(16).padStart(2, "0")).join("");

// 5-bit words as bytes, zero-padded.
function bytes(ws) {
  const out = [];
  let acc = 0, n = 0;
  for (const w of ws) for (acc = (acc << 5) | w, n += 5; n >= 8; ) out.push((acc >> (n -= 8)) & 255);
  if (n) out.push((acc << (8 - n)) & 255);
  return out;
}

// secp256k1: the key (hex) that signed `hash` with `sig` (r, s, recovery id).
const P = 2n ** 256n - 2n ** 32n - 977n;
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const G = [0x79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798n, 0x483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8n];
const md = (a, m = P) => ((a % m) + m) % m;
const inv = (a, m = P) => {
  let [r, s, x, y] = [m, md(a, m), 0n, 1n];
  while (s) [r, s, x, y] = [s, r % s, y, x - (r / s) * y];
  return md(x, m);
};
const add = (A, B) => {
  if (!A || !B) return A || B;
  const [x, y] = A, [u, v] = B;
  if (x === u && !md(y + v)) return null;
  const l = md(x === u ? 3n * x * x * inv(2n * y) : (v - y) * inv(u - x)), z = md(l * l - x - u);
  return [z, md(l * (x - z) - y)];
};
const mul = (k, A) => (k ? add(mul(k >> 1n, add(A, A)), k & 1n ? A : null) : null);
const big = (b) => BigInt("0x" + hex(b));

function recover(hash, sig) {
  const r = big(sig.slice(0, 32)), s = big(sig.slice(32, 64)), id = sig[64], x = r + (id & 2 ? N : 0n);
  if (!r || r >= N || !s || s >= N || id > 3 || x >= P) return null;
  const y2 = md(x ** 3n + 7n), pw = (b, e) => (e ? md(pw(md(b * b), e >> 1n) * (e & 1n ? b : 1n)) : 1n);
  let y = pw(y2, (P + 1n) / 4n);
  if ((y * y) % P !== y2) return null;
  if ((y & 1n) !== BigInt(id & 1)) y = P - y;
  const ri = inv(r, N), Q = add(mul(md(s * ri, N), [x, y]), mul(md(-big(hash) * ri, N), G));
  return Q && (Q[1] & 1n ? "03" : "02") + Q[0].toString(16).padStart(64, "0");
}
