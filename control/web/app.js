// StaticWire's public page. The WireGuard key pair is made here (WebCrypto X25519, or tweetnacl
// where the browser has none); only the public key is ever sent, with a proof of holding the
// private key (PROTOCOL.md 3.1). What the server says is shown as textContent, never as HTML.
import { encode } from "./vendor/uqr/index.mjs";
import { decodeBolt11 } from "./bolt11.js";
import { sha256 } from "./sha256.js";

const $ = (id) => document.getElementById(id);
// The private key, only when the customer asks to be remembered: the status needs a proof.
const STORE_KEY = "staticwire.private_key";
const LANG_KEY = "staticwire.lang";

let msgs = {};
let lang = "en";
let terms = null;
let site = null;
// Re-rendered after a language change.
let redraw = [];

// ---------- text ----------

function t(key, vars) {
  let s = msgs[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replaceAll("{" + k + "}", String(v));
  return s;
}

const sat = (n) => t("sat", { n: new Intl.NumberFormat(lang).format(n) });
const when = (unix) => new Date(unix * 1000).toLocaleString(lang, { dateStyle: "medium", timeStyle: "short" });

async function loadLanguage(l) {
  const r = await fetch(`/web/i18n/${l}.json`);
  if (!r.ok) throw new Error("language " + l);
  msgs = await r.json();
  lang = l;
  document.documentElement.lang = l;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const f of redraw) f();
}

function pickLanguage(offered) {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && offered.includes(saved)) return saved;
  for (const l of navigator.languages || []) {
    const base = l.toLowerCase().split("-")[0];
    if (offered.includes(base)) return base;
  }
  return offered[0];
}

// ---------- API ----------

class ApiError extends Error {
  constructor(code, message, retryAfter) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// `kp`: the key pair whose rental the request acts on; it is then proven.
async function api(method, path, body, signal, kp) {
  let r;
  const text = body ? JSON.stringify(body) : undefined;
  const headers = body ? { "content-type": "application/json" } : {};
  if (kp && terms.proof_key) headers.authorization = await proof(kp, method, path, text);
  try {
    r = await fetch(path, { method, signal, headers, body: text, cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("network", "");
  }
  let data = null;
  try {
    data = await r.json();
  } catch (_) {
    // not JSON: described by the status below
  }
  if (!r.ok) {
    const err = data && data.error ? data.error : { code: "http", message: "HTTP " + r.status };
    throw new ApiError(err.code, err.message, r.headers.get("retry-after"));
  }
  return data;
}

// An error as a sentence in the page's language; the server's own words where there is no
// translation for its code.
function describe(e) {
  if (!(e instanceof ApiError)) return t("err_unexpected", { message: e.message || String(e) });
  const key = "err_" + e.code;
  if (key in msgs) return t(key, { message: e.message, seconds: e.retryAfter || "?" });
  return t("err_other", { message: e.message || e.code });
}

function showError(id, e) {
  const el = $(id);
  if (e) {
    el.textContent = typeof e === "string" ? e : describe(e);
    el.hidden = false;
  } else {
    el.hidden = true;
    el.textContent = "";
  }
}

// An address with its prefix length where it is a block.
const cidr = (r) => (r.prefix_len && r.prefix_len < 32 ? `${r.address}/${r.prefix_len}` : r.address);

const urlKey = (k) => k.replaceAll("+", "-").replaceAll("/", "_");

// ---------- keys ----------

const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
const unb64url = (s) => Uint8Array.from(atob(s.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0));

let keygenUsed = "";
// `?keygen=js` makes the page use tweetnacl even where WebCrypto has X25519 (the browser test
// walks both paths).
const forcedJs = () => new URLSearchParams(location.search).get("keygen") === "js";

function loadNacl() {
  if (self.nacl && self.nacl.scalarMult) return Promise.resolve(self.nacl);
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/web/vendor/tweetnacl/nacl.min.js";
    s.onload = () => resolve(self.nacl);
    s.onerror = () => reject(new Error("tweetnacl"));
    document.head.appendChild(s);
  });
}

// WireGuard's clamping, as `wg genkey` writes it.
async function makeKeyPair() {
  const priv = crypto.getRandomValues(new Uint8Array(32));
  priv[0] &= 248;
  priv[31] = (priv[31] & 127) | 64;
  return { priv, pub: await x25519(priv, null) };
}

// ---------- proof of key possession (PROTOCOL.md 3.1) ----------

const enc = new TextEncoder();
const subtle = self.crypto && crypto.subtle;
const cat = (...a) => Uint8Array.from(a.flatMap((x) => [...x]));
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

// HMAC in plain JS over the shared SHA-256: no crypto.subtle on plain HTTP, and one path is
// one path tested (control/tests/web/proof_test.mjs).
const hmacjs = (k, m) => {
  const b = new Uint8Array(64);
  b.set(k.length > 64 ? sha256(k) : k);
  return sha256(cat(b.map((v) => v ^ 0x5c), sha256(cat(b.map((v) => v ^ 0x36), m))));
};

// X25519(priv, pub), or the public key of `priv` when `pub` is null. WebCrypto X25519 needs a
// secure context and a recent browser; `?keygen=js` forces the library.
const PKCS8 = unb64url("MC4CAQAwBQYDK2VuBCIEIA==");
async function x25519(priv, pub) {
  if (subtle && !forcedJs()) {
    try {
      const k = await subtle.importKey("pkcs8", cat(PKCS8, priv), { name: "X25519" }, true, ["deriveBits"]);
      keygenUsed = "webcrypto";
      if (!pub) return unb64url((await subtle.exportKey("jwk", k)).x);
      const p = await subtle.importKey("raw", pub, { name: "X25519" }, false, []);
      return new Uint8Array(await subtle.deriveBits({ name: "X25519", public: p }, k, 256));
    } catch (_) {
      // no X25519 in this WebCrypto
    }
  }
  const nacl = await loadNacl();
  keygenUsed = "tweetnacl";
  return pub ? nacl.scalarMult(priv, pub) : nacl.scalarMult.base(priv);
}

// A request's Authorization: HMAC over method, path and query as sent, time, nonce and body
// hash, keyed by HKDF(X25519(our key, the proof key)).
async function proof(kp, method, path, body, pk = terms.proof_key) {
  const S = unb64url(pk), id = b64(kp.pub), shared = await x25519(kp.priv, S);
  if (shared.every((b) => !b)) throw new Error("X25519: all-zero result");
  const k = hmacjs(hmacjs(enc.encode("StaticWire proof v1"), shared), cat(kp.pub, S, [1]));
  const u = new URL(path, location.href), ts = Math.floor(Date.now() / 1000);
  const nonce = crypto.getRandomValues(new Uint8Array(16));
  const msg = [method, u.pathname + u.search, ts, hex(nonce), hex(sha256(enc.encode(body || "")))].join("\n");
  const mac = hmacjs(k, enc.encode(msg));
  return `StaticWire-Proof key="${id}", ts="${ts}", nonce="${b64(nonce)}", mac="${b64(mac)}"`;
}

// A key pair from a pasted private key, or from a configuration file's PrivateKey line.
async function keyPairOf(text) {
  const m = text.match(/PrivateKey\s*=\s*([A-Za-z0-9+/]{43}=)/) || text.trim().match(/^([A-Za-z0-9+/]{43}=)$/);
  if (!m) throw new ApiError("bad_private_key", "");
  const priv = unb64url(m[1]);
  return { priv, pub: await x25519(priv, null) };
}

// ---------- QR ----------

function drawQr(canvas, text) {
  const qr = encode(text, { ecc: "M", border: 4 });
  const scale = Math.max(2, Math.floor(Math.min(480, (canvas.parentElement.clientWidth || 320) - 8) / qr.size));
  canvas.width = canvas.height = qr.size * scale;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#000";
  qr.data.forEach((row, y) => row.forEach((on, x) => on && ctx.fillRect(x * scale, y * scale, scale, scale)));
}

// ---------- invoices ----------

// The checks a client makes before paying: the invoice is one, signed by the terms' payee, of
// the terms' network, for exactly the amount these terms give, with the payment hash the API
// named, and not expired.
// Returns null, or why not (in words).
function checkInvoice(inv, expectedSat) {
  let d;
  try {
    d = decodeBolt11(inv.bolt11);
  } catch (e) {
    return t("inv_malformed", { why: e.message });
  }
  if (d.network !== terms.network) return t("inv_network", { got: d.network, want: terms.network });
  if (d.amountMsat === null || d.amountMsat !== BigInt(expectedSat) * 1000n || inv.amount_sat !== expectedSat) {
    return t("inv_amount", { got: d.amountMsat === null ? "?" : sat(Number(d.amountMsat / 1000n)), want: sat(expectedSat) });
  }
  if (d.paymentHash !== inv.payment_hash) return t("inv_hash");
  if (d.timestamp + d.expiry <= Date.now() / 1000) return t("inv_expired");
  // Last, as PROTOCOL.md section 8 orders the checks: an invoice altered after signing recovers
  // another key, so what was altered is named first.
  if (terms.payee && d.payee !== terms.payee) return t("inv_payee");
  return null;
}
// For the browser test, which feeds it real invoices with one thing changed.
window.staticwireCheckInvoice = (inv, expectedSat) => checkInvoice(inv, expectedSat);

// Rent a month costs for this rental: its block's addresses and its IPv6 prefix.
function monthlyOf(prefixLen, hasIpv6) {
  const n = 2 ** (32 - (prefixLen || 32));
  return terms.monthly_sat + (n - 1) * (terms.address_monthly_sat || 0) + (hasIpv6 ? terms.ipv6_monthly_sat || 0 : 0);
}

// Shows an invoice in `box` and long-polls until it settles or expires; resolves with its
// final state. A newer call on the same box cancels the older one.
const polls = new Map();

function showInvoice(box, inv, expectedSat, kp) {
  polls.get(box)?.abort();
  polls.delete(box);
  const refused = checkInvoice(inv, expectedSat);
  if (refused) {
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = t("inv_refused", { why: refused });
    box.replaceChildren(p);
    return Promise.resolve("refused");
  }
  const ctl = new AbortController();
  polls.set(box, ctl);
  box.replaceChildren($("invoice-tpl").content.cloneNode(true));
  const el = box.firstElementChild;
  el.dataset.hash = inv.payment_hash;
  for (const n of el.querySelectorAll("[data-i18n]")) n.textContent = t(n.dataset.i18n);
  for (const n of el.querySelectorAll("[data-i18n-label]")) n.setAttribute("aria-label", t(n.dataset.i18nLabel));
  const amount = () => {
    const what = inv.purpose === "activation" ? t("purpose_activation") : t("purpose_renewal", { months: inv.months });
    el.querySelector(".amount").textContent = t("invoice_amount", { amount: sat(inv.amount_sat), what, expires: when(inv.expires_at) });
  };
  amount();
  drawQr(el.querySelector("canvas"), "lightning:" + inv.bolt11.toUpperCase());
  el.querySelector(".pay").href = "lightning:" + inv.bolt11;
  el.querySelector(".bolt11").value = inv.bolt11;
  el.querySelector(".copy").onclick = async () => {
    const ta = el.querySelector(".bolt11");
    try {
      await navigator.clipboard.writeText(inv.bolt11);
    } catch (_) {
      ta.select();
      document.execCommand("copy");
    }
    setState("copied");
  };
  const stateEl = el.querySelector(".state");
  // A message key, or the words of an error; kept so a language change redraws it.
  let shown = ["waiting", "waiting"];
  const setState = (key, cls, words) => {
    shown = [key, cls, words];
    stateEl.textContent = words || t(key);
    stateEl.className = "state " + (cls || "");
  };
  setState("waiting", "waiting");
  redraw.push(() => {
    if (!el.isConnected) return;
    amount();
    setState(...shown);
    for (const n of el.querySelectorAll("[data-i18n]")) n.textContent = t(n.dataset.i18n);
    for (const n of el.querySelectorAll("[data-i18n-label]")) n.setAttribute("aria-label", t(n.dataset.i18nLabel));
  });
  box.hidden = false;
  const done = (outcome) => {
    if (polls.get(box) === ctl) polls.delete(box);
    return outcome;
  };
  return (async () => {
    let failures = 0;
    for (;;) {
      try {
        const r = await api("GET", `/v1/invoices/${encodeURIComponent(inv.payment_hash)}?wait=55`, null, ctl.signal, kp);
        failures = 0;
        if (r.state === "settled") {
          setState("paid", "ok");
          el.dataset.state = "settled";
          el.classList.add("done");
          return done("settled");
        }
        if (r.state === "expired") {
          setState("expired", "bad");
          el.dataset.state = "expired";
          el.classList.add("done");
          return done("expired");
        }
        setState("waiting", "waiting");
      } catch (e) {
        if (e.name === "AbortError") return "cancelled";
        failures++;
        setState("", "bad", describe(e) + " " + t("retrying"));
        await new Promise((r) => setTimeout(r, Math.min(30, 2 * failures) * 1000));
      }
    }
  })();
}

// ---------- rent ----------

let pending = null; // { priv, pub } between making the key and saving the configuration
let saved = false;

window.addEventListener("beforeunload", (ev) => {
  // Leaving before the configuration is saved loses the private key for good.
  if (pending && !saved) {
    ev.preventDefault();
    ev.returnValue = "";
  }
});

function fillConfig(wgQuick, priv) {
  const lines = wgQuick.split("\n");
  const line = "PrivateKey = " + b64(priv);
  const i = lines.findIndex((l) => /^#?\s*PrivateKey\s*=/.test(l));
  if (i >= 0) lines[i] = line;
  else lines.splice(lines.indexOf("[Interface]") + 1, 0, line);
  return lines.join("\n");
}

async function rent() {
  const btn = $("rent-btn");
  btn.disabled = true;
  showError("rent-error", null);
  $("rent-config").hidden = true;
  try {
    const kp = await makeKeyPair();
    document.body.dataset.keygen = keygenUsed;
    pending = kp;
    saved = false;
    const pub = b64(kp.pub);
    const req = { public_key: pub };
    const len = Number($("prefix").value || 32);
    if (len !== 32) req.prefix_len = len;
    if ($("host").value) req.host = $("host").value;
    if (!$("ipv6-row").hidden) req.ipv6 = $("ipv6").checked;
    const res = await api("POST", "/v1/rentals", req, undefined, kp);
    $("rent-pub").textContent = pub;
    $("rent-address").textContent = cidr(res.rental);
    $("rent-ipv6").textContent = res.rental.ipv6 || "";
    $("rent-ipv6-row").hidden = !res.rental.ipv6;
    // One hold fewer: the free counts changed.
    api("GET", "/v1/terms").then((t2) => {
      terms = t2;
      renderTerms();
    }, () => {});
    $("rent-key").hidden = false;
    lastKp = kp;
    if ($("remember").checked) remember(kp);
    const expected = terms.activation_sat + monthlyOf(res.rental.prefix_len, !!res.rental.ipv6);
    const outcome = await showInvoice($("rent-invoice"), res.invoice, expected, kp);
    if (outcome !== "settled") return;
    const conf = await api("GET", `/v1/rentals/${urlKey(pub)}/config`, null, undefined, kp);
    showConfig(fillConfig(conf.wg_quick, kp.priv));
  } catch (e) {
    showError("rent-error", e);
  } finally {
    btn.disabled = false;
  }
}

function showConfig(text) {
  $("config-text").textContent = text;
  const a = $("config-download");
  if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  a.onclick = () => {
    saved = true;
  };
  $("rent-config").hidden = false;
  drawQr($("config-qr"), text);
  $("rent-config").scrollIntoView({ behavior: "smooth", block: "start" });
}

// ---------- status and renewal ----------

function remember(kp) {
  localStorage.setItem(STORE_KEY, b64(kp.priv));
  showRemembered();
}

async function showRemembered() {
  // Before v1.1 only the public key was kept: of no use without the private key.
  localStorage.removeItem("staticwire.public_key");
  const k = localStorage.getItem(STORE_KEY);
  $("remembered").hidden = !k;
  $("remembered-key").textContent = k ? b64((await keyPairOf(k)).pub) : "";
  $("remember").checked = !!k;
}

let current = null; // the rental last shown
let currentKp = null; // and its key pair
let lastKp = null; // the key pair of the rental made on this page

function fact(dl, label, value) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

function renderStatus() {
  const r = current;
  if (!r) return;
  const dl = $("status-list");
  dl.replaceChildren();
  fact(dl, t("state"), t("state_" + r.state));
  fact(dl, t("address"), cidr(r));
  if (r.ipv6) fact(dl, t("ipv6"), r.ipv6);
  if (r.paid_until) fact(dl, t("paid_until"), when(r.paid_until));
  if (r.reserved_until) fact(dl, t("reserved_until"), when(r.reserved_until));
  fact(dl, t("amount_due"), sat(r.amount_due_sat));
  fact(dl, t("server"), r.server.endpoint);
  const back = $("backpay");
  back.hidden = !(r.months_owed > 0);
  const owed = r.months_owed * monthlyOf(r.prefix_len, !!r.ipv6);
  back.textContent = r.months_owed > 0 ? t("backpay", { months: r.months_owed, amount: sat(owed) }) : "";
  $("renew-form").hidden = !["active", "lapsed", "suspended"].includes(r.state);
  $("status").hidden = false;
  $("status").dataset.state = r.state;
}

// What an open invoice of rental `r` should ask: the activation with the first month, or
// its months at the rental's rate.
function expectedFor(r, inv) {
  const monthly = monthlyOf(r.prefix_len, !!r.ipv6);
  return inv.purpose === "activation" ? terms.activation_sat + monthly : inv.months * monthly;
}

// `key`: a pasted private key or configuration file, or a key pair.
async function showStatus(key) {
  showError("status-error", null);
  try {
    const kp = key.priv ? key : key.trim() ? await keyPairOf(key) : lastKp;
    if (!kp) return;
    current = await api("GET", `/v1/rentals/${encodeURIComponent(urlKey(b64(kp.pub)))}`, null, undefined, kp);
    currentKp = kp;
    renderStatus();
    $("ptr-form").hidden = true;
    if (current.state === "active" && terms.reverse_dns) showPtr();
    if ($("remember").checked) remember(kp);
    const inv = current.open_invoice;
    if (inv && inv.state === "open" && !polls.has($("renew-invoice"))) {
      showInvoice($("renew-invoice"), inv, expectedFor(current, inv), kp).then((outcome) => {
        // Refreshed once the invoice is decided (not when it was refused or replaced).
        if (outcome === "settled" || outcome === "expired") showStatus(kp);
      });
    }
  } catch (e) {
    current = null;
    $("status").hidden = true;
    showError("status-error", e);
  }
}

async function renew(ev) {
  ev.preventDefault();
  showError("renew-error", null);
  const months = Number($("months").value);
  if (!Number.isInteger(months) || months < 1 || months > terms.max_months) {
    showError("renew-error", t("err_months_range", { max: terms.max_months }));
    return;
  }
  const kp = currentKp;
  try {
    const res = await api("POST", `/v1/rentals/${urlKey(b64(kp.pub))}/renewals`, { months }, undefined, kp);
    current = res.rental;
    renderStatus();
    const box = $("renew-invoice");
    // Back payments are whole months: the invoice buys the months asked for plus those owed.
    if (res.invoice.months < months) {
      showError("renew-error", t("inv_refused", { why: t("inv_months") }));
      return;
    }
    const outcome = await showInvoice(box, res.invoice, expectedFor(res.rental, res.invoice), kp);
    if (outcome === "settled") await showStatus(kp);
  } catch (e) {
    showError("renew-error", e);
  }
}

// ---------- reverse DNS (PROTOCOL.md, Reverse DNS): its A/AAAA must name the address ----------

const ptrPath = (kp) => `/v1/rentals/${urlKey(b64(kp.pub))}/ptr`;

async function showPtr(list) {
  try {
    list = list || (await api("GET", ptrPath(currentKp), null, undefined, currentKp));
  } catch (_) {
    return; // this provider offers no reverse DNS (404)
  }
  $("ptr-addr").replaceChildren(...list.records.map((r) => new Option(`${r.address} → ${r.name || "—"}`, r.address)));
  $("ptr-form").hidden = false;
}

async function ptr(ev, clear) {
  ev.preventDefault();
  showError("ptr-error", null);
  const address = $("ptr-addr").value;
  const body = clear ? { address } : { address, name: $("ptr-name").value.trim() };
  try {
    await showPtr(await api(clear ? "DELETE" : "PUT", ptrPath(currentKp), body, undefined, currentKp));
  } catch (e) {
    showError("ptr-error", e);
  }
}

// ---------- terms ----------

function renderTerms() {
  if (!terms) return;
  const dl = $("terms-list");
  dl.replaceChildren();
  const days = Math.round(terms.month_seconds / 86400);
  fact(dl, t("first_payment"), t("first_payment_value", { amount: sat(terms.first_payment_sat), activation: sat(terms.activation_sat), monthly: sat(terms.monthly_sat) }));
  fact(dl, t("monthly"), t("monthly_value", { amount: sat(terms.monthly_sat), days }));
  fact(dl, t("reservation"), t("reservation_value", { months: Math.round(terms.reservation_seconds / terms.month_seconds) }));
  fact(dl, t("invoice_expiry"), t("minutes", { n: Math.round(terms.invoice_expiry_seconds / 60) }));
  fact(dl, t("max_months"), String(terms.max_months));
  fact(dl, t("network"), terms.network);
  $("testnet").hidden = terms.network === "bitcoin";
  $("testnet").textContent = t("testnet", { network: terms.network });
  const lengths = (terms.ipv4_prefix_lengths || [32]).slice().sort((a, b) => b - a);
  const extra = terms.address_monthly_sat || 0;
  const v6hosts = terms.servers.filter((s) => s.ipv6_prefix_len);
  const v6cost = terms.ipv6_monthly_sat || 0;
  if (lengths.length > 1) {
    fact(dl, t("blocks"), t("blocks_value", { blocks: lengths.filter((l) => l < 32).map((l) => `/${l} (${2 ** (32 - l)})`).join(", "), amount: sat(extra) }));
  }
  if (v6hosts.length) {
    const len = v6hosts[0].ipv6_prefix_len;
    fact(dl, t("ipv6"), v6cost ? t("ipv6_paid", { len, amount: sat(v6cost) }) : t("ipv6_included", { len }));
  }
  const body = $("hosts").tBodies[0];
  body.replaceChildren();
  let total = 0;
  for (const s of terms.servers) {
    const tr = body.insertRow();
    tr.insertCell().textContent = s.endpoint;
    const free = s.free_ipv4;
    total += free || 0;
    tr.insertCell().textContent = free === undefined || free === null ? "?" : free === 0 ? t("none_free") : String(free);
    tr.insertCell().textContent = s.ipv6_prefix_len ? "/" + s.ipv6_prefix_len : t("no");
  }
  $("rent-btn").disabled = total === 0;
  $("months").max = terms.max_months;
  renderRentOptions(lengths, extra, v6hosts.length > 0, v6cost);
}

// The address block, host and IPv6 choices, where the provider offers more than one.
function renderRentOptions(lengths, extra, hasV6, v6cost) {
  const prefix = $("prefix");
  const keep = prefix.value;
  prefix.replaceChildren();
  for (const l of lengths) {
    const n = 2 ** (32 - l);
    const monthly = terms.monthly_sat + (n - 1) * extra;
    prefix.add(new Option(t(n === 1 ? "one_address" : "n_addresses", { n, len: l, amount: sat(monthly) }), String(l)));
  }
  if (keep) prefix.value = keep;
  $("prefix-row").hidden = lengths.length < 2;
  const host = $("host");
  const keepHost = host.value;
  host.replaceChildren(new Option(t("any_host"), ""));
  for (const s of terms.servers) {
    if (s.name) host.add(new Option(s.endpoint, s.name));
  }
  host.value = keepHost;
  $("host-row").hidden = terms.servers.length < 2;
  // IPv6 that costs extra is a choice; free IPv6 comes with every rental on a host that has it.
  $("ipv6-row").hidden = !(hasV6 && v6cost > 0);
  $("ipv6-label").textContent = t("ipv6_choice", { amount: sat(v6cost) });
  $("ipv6-free").hidden = !(hasV6 && v6cost === 0);
  $("ipv6-free").textContent = t("ipv6_free_note");
}

// ---------- start ----------

async function main() {
  $("insecure").hidden = window.isSecureContext;
  try {
    [site, terms] = await Promise.all([api("GET", "/web/site.json"), api("GET", "/v1/terms")]);
  } catch (e) {
    await loadLanguage("en").catch(() => {});
    showError("load-error", e);
    return;
  }
  document.title = site.name;
  $("site-name").textContent = site.name;
  const sel = $("lang");
  // Each language by its own name.
  const names = { en: "English", de: "Deutsch" };
  for (const l of site.languages) sel.add(new Option(names[l] || l, l));
  sel.parentElement.hidden = site.languages.length < 2;
  redraw.push(renderTerms, renderStatus);
  await loadLanguage(pickLanguage(site.languages));
  sel.value = lang;
  sel.onchange = async () => {
    localStorage.setItem(LANG_KEY, sel.value);
    await loadLanguage(sel.value);
  };
  $("rent-btn").onclick = rent;
  $("ptr-form").onsubmit = (ev) => ptr(ev, false);
  $("ptr-clear").onclick = (ev) => ptr(ev, true);
  $("status-form").onsubmit = (ev) => {
    ev.preventDefault();
    showStatus($("pubkey").value);
  };
  $("renew-form").onsubmit = renew;
  $("remember").onchange = () => {
    if ($("remember").checked) {
      const kp = currentKp || lastKp;
      if (kp) remember(kp);
    } else {
      localStorage.removeItem(STORE_KEY);
      showRemembered();
    }
  };
  $("forget").onclick = () => {
    localStorage.removeItem(STORE_KEY);
    showRemembered();
  };
  await showRemembered().catch(() => localStorage.removeItem(STORE_KEY));
  const k = localStorage.getItem(STORE_KEY);
  if (k) showStatus(k);
  document.body.dataset.ready = "1";
}

main();
