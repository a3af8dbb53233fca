// The web page's BOLT11 check (control/web/bolt11.js) under Node, driven by the control's
// test `hardening_tests::the_page_recovers_the_invoice_payee_from_its_signature`, which passes
// real invoices of two dev nodes as JSON: {payee, other_payee, invoices, foreign}.
// Prints "all passed" or exits non-zero naming the check that failed.

import { decodeBolt11 } from "../../web/bolt11.js";
import { sha256 } from "../../web/sha256.js";
import { createHash } from "node:crypto";

const input = JSON.parse(process.argv[2]);
let failures = 0;
function check(cond, what) {
  if (!cond) {
    console.error("FAIL: " + what);
    failures++;
  }
}

// SHA-256 against Node's, around the padding edges.
for (const n of [0, 3, 55, 56, 63, 64, 65, 1000]) {
  const m = "a".repeat(n);
  const hex = Buffer.from(sha256(new TextEncoder().encode(m))).toString("hex");
  check(hex === createHash("sha256").update(m).digest("hex"), `sha256 of ${n} bytes`);
}

// The specification's example ("Please make a donation of any amount...", BOLT 11).
const SPEC =
  "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql";
check(
  decodeBolt11(SPEC).payee === "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad",
  "the specification's example recovers its payee",
);

for (const inv of input.invoices) check(decodeBolt11(inv).payee === input.payee, "our invoice names our node");
const foreign = decodeBolt11(input.foreign).payee;
check(foreign === input.other_payee && foreign !== input.payee, "another node's invoice names that node");

// One signed data word changed, the bech32 checksum made right again: not our node.
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
function tamper(inv, at) {
  const sep = inv.lastIndexOf("1");
  const hrp = inv.slice(0, sep);
  const words = [...inv.slice(sep + 1, -6)].map((c) => CHARSET.indexOf(c));
  words[at] ^= 1;
  const expand = [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31)];
  const mod = polymod([...expand, ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const sum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return hrp + "1" + [...words, ...sum].map((w) => CHARSET[w]).join("");
}
const inv = input.invoices[0];
for (const at of [3, 20, 40]) {
  let payee = null;
  try {
    payee = decodeBolt11(tamper(inv, at)).payee;
  } catch (e) {
    payee = "refused: " + e.message;
  }
  check(payee !== input.payee, `a changed word ${at} still names our node`);
}

if (failures) process.exit(1);
console.log("all passed");
