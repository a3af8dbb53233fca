// Just enough of BOLT11 to check an invoice before showing it: the bech32 checksum, the
// network, the amount, the payment hash and the expiry. The payee's signature is not checked
// here (that needs secp256k1 point recovery); staticip checks it.

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
    }
    i += 3 + len;
  }
  if (!paymentHash) throw new Bolt11Error("no payment hash");
  return { network: NETWORKS[m[1]], amountMsat, timestamp, expiry, paymentHash };
}
