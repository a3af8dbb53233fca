// The web page's proof of key possession (control/web/app.js, PROTOCOL.md 3.1) under Node: the
// PROTOCOL.md test vector with WebCrypto's X25519 and with tweetnacl's (a page on plain HTTP),
// and the page's own SHA-256 and HMAC against Node's.
// Run: node control/tests/web/proof_test.mjs (exits 1 on the first mismatch); the control's
// hardening tests run it.
import { readFileSync } from "node:fs";
import { createHash, webcrypto } from "node:crypto";
import assert from "node:assert/strict";
import { sha256 } from "../../web/sha256.js";

const web = new URL("../../web/", import.meta.url);
const app = readFileSync(new URL("app.js", web), "utf8");
const start = app.indexOf("// ---------- proof of key possession");
const end = app.indexOf("// ---------- QR");
assert.ok(start > 0 && end > start, "proof section of app.js");
const line = (prefix) => app.split("\n").find((l) => l.startsWith(prefix));
const helpers = [line("const b64 = "), line("const unb64url = ")].join("\n");

// tweetnacl's UMD build, evaluated with a `self` to attach to.
const naclScope = {};
new Function("self", "module", readFileSync(new URL("vendor/tweetnacl/nacl.min.js", web), "utf8"))(naclScope, undefined);
const nacl = naclScope.nacl;
assert.ok(nacl && nacl.scalarMult, "tweetnacl loaded");

function load(subtle) {
  const fixedNonce = (a) => (a.set([...Array(16).keys()]), a);
  const scope = {
    self: { crypto: { subtle } },
    crypto: { subtle, getRandomValues: fixedNonce },
    location: { href: "http://198.18.0.1:8080/" },
    window: {},
    Date: { now: () => 1795637704000 },
    // With WebCrypto the library must not be needed.
    loadNacl: async () => {
      if (subtle) throw new Error("tweetnacl loaded although WebCrypto has X25519");
      return nacl;
    },
    forcedJs: () => false,
    ApiError: class extends Error {},
    sha256,
  };
  const body = `${helpers}\n${app.slice(start, end)}\nreturn { proof, hmacjs, keyPairOf, x25519 };`;
  return new Function(...Object.keys(scope), body)(...Object.values(scope));
}

const unhex = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
const clientPriv = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
const proofKey = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
const body = '{"public_key":"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="}';
const header =
  'StaticWire-Proof key="hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", ts="1795637704", nonce="AAECAwQFBgcICQoLDA0ODw==", mac="Zncdp8fXZlMVLS/fqf76vijNxQ/Cu+npQJ/82fjNa64="';
const statusPath = "/v1/rentals/hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=";

let passed = 0;
for (const [name, subtle] of [["WebCrypto", webcrypto.subtle], ["plain JS + tweetnacl", undefined]]) {
  const p = load(subtle);
  const kp = await p.keyPairOf("[Interface]\nPrivateKey = " + Buffer.from(clientPriv).toString("base64") + "\nAddress = 203.0.113.2/32\n");
  assert.equal(Buffer.from(kp.pub).toString("base64"), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", `${name}: public key`);
  assert.equal(await p.proof(kp, "POST", "/v1/rentals", body, proofKey), header, `${name}: rent proof`);
  const get = await p.proof(kp, "GET", statusPath, undefined, proofKey);
  assert.ok(get.endsWith('mac="Bhj7dOZpXLX8rKLSnR/ZiOI05wSlxbDQFJ79mdxoLPM="'), `${name}: status proof ${get}`);
  // A percent-encoded path is MACed as the browser sends it.
  const enc = await p.proof(kp, "GET", "/v1/rentals/hSDw%3D", undefined, proofKey);
  const plain = await p.proof(kp, "GET", "/v1/rentals/hSDw=", undefined, proofKey);
  assert.notEqual(enc, plain, `${name}: the target as sent`);
  await assert.rejects(p.keyPairOf("not a key"), `${name}: a bad key is refused`);
  passed += 5;
}

const { hmacjs } = load(undefined);
for (let n = 0; n < 300; n++) {
  const data = webcrypto.getRandomValues(new Uint8Array(n));
  assert.equal(Buffer.from(sha256(data)).toString("hex"), createHash("sha256").update(data).digest("hex"), `sha256 of ${n} bytes`);
  const key = webcrypto.getRandomValues(new Uint8Array(n % 100));
  const want = Buffer.from(await webcrypto.subtle.sign("HMAC", await webcrypto.subtle.importKey("raw", key.length ? key : new Uint8Array(1), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]), data)).toString("hex");
  if (key.length) assert.equal(Buffer.from(hmacjs(key, data)).toString("hex"), want, `hmac, key of ${key.length} bytes`);
}
passed += 2;
console.log(`${passed} passed, 0 failed`);
